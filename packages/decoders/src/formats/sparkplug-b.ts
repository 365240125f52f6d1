// Sparkplug B (Eclipse Sparkplug 3.0) on `spBv1.0/<group>/<type>/<edge node>[/<device>]`.
// BIRTH messages define each metric's name, alias and datatype; later DATA messages may carry the
// alias only, so the alias table is kept per edge node (aliases are unique across a node and its
// devices). `seq` runs 0..255 across all of a node's messages after NBIRTH: a gap is flagged on
// the readings. NDEATH/DDEATH are availability (offline); an NDEATH whose bdSeq does not match the
// current session's NBIRTH is the late will of an earlier session and is ignored.
// Device ids are `<group>/<edge node>` and `<group>/<edge node>/<device>`.
import type { MetricValue, Rejection } from '@ferry/protocol';
import { guarded, nothing, rejected } from '../decoder.js';
import type { Decoder, DecodeInput, DecodeOutcome } from '../decoder.js';
import { availability, buildReading, outcomeOf } from '../draft.js';
import type { DraftResult } from '../draft.js';
import { createDeviceStateStore } from '../device-state.js';
import type { DeviceStateStore } from '../device-state.js';
import type { Leaf } from '../names.js';
import { decodeSparkplugPayload, SparkplugDataType } from './sparkplug-proto.js';
import type { SparkplugMetric } from './sparkplug-proto.js';

export const SPARKPLUG_NAMESPACE = 'spBv1.0';

type MessageType = 'NBIRTH' | 'NDATA' | 'NDEATH' | 'DBIRTH' | 'DDATA' | 'DDEATH';
const MESSAGE_TYPES = new Set<string>(['NBIRTH', 'NDATA', 'NDEATH', 'DBIRTH', 'DDATA', 'DDEATH']);

interface MetricDefinition {
  readonly name: string;
  readonly datatype: number;
}

export interface EdgeNodeState {
  /** alias (decimal) -> definition, from NBIRTH and DBIRTHs. */
  readonly aliases: Map<string, MetricDefinition>;
  /** `<device or ''>/<name>` -> datatype, for DATA metrics sent by name without a datatype. */
  readonly datatypes: Map<string, number>;
  readonly devices: Set<string>;
  seq: number | undefined;
  bdSeq: string | undefined;
}

/** Bound on the definitions kept per edge node. */
const MAX_DEFINITIONS = 20_000;

export interface SparkplugState {
  readonly nodes: DeviceStateStore<EdgeNodeState>;
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** A 64-bit integer as a number when exact, else its exact decimal string (never rounded). */
function exactInteger(value: bigint): MetricValue {
  return value <= MAX_SAFE && value >= -MAX_SAFE ? Number(value) : value.toString();
}

function integerOf(metric: SparkplugMetric): bigint | undefined {
  if (metric.long_value !== undefined) return BigInt(metric.long_value);
  if (metric.int_value !== undefined) return BigInt(metric.int_value >>> 0);
  return undefined;
}

type MetricVerdict = { readonly ok: true; readonly value: MetricValue } | { readonly ok: false; readonly reason: string } | { readonly ok: 'null' };

/** Reads a metric's value as its datatype says (spec 6.4.16: signed types in two's complement). */
export function sparkplugValue(metric: SparkplugMetric, datatype: number): MetricVerdict {
  if (metric.is_null) return { ok: 'null' };
  const int = integerOf(metric);
  switch (datatype) {
    case SparkplugDataType.Int8:
    case SparkplugDataType.Int16:
    case SparkplugDataType.Int32:
    case SparkplugDataType.Int64: {
      if (int === undefined) return { ok: false, reason: 'has no integer value' };
      const bits = datatype === SparkplugDataType.Int8 ? 8 : datatype === SparkplugDataType.Int16 ? 16 : datatype === SparkplugDataType.Int32 ? 32 : 64;
      return { ok: true, value: exactInteger(BigInt.asIntN(bits, int)) };
    }
    case SparkplugDataType.UInt8:
    case SparkplugDataType.UInt16:
    case SparkplugDataType.UInt32:
    case SparkplugDataType.UInt64:
    case SparkplugDataType.DateTime: {
      if (int === undefined) return { ok: false, reason: 'has no integer value' };
      const bits = datatype === SparkplugDataType.UInt8 ? 8 : datatype === SparkplugDataType.UInt16 ? 16 : datatype === SparkplugDataType.UInt32 ? 32 : 64;
      return { ok: true, value: exactInteger(BigInt.asUintN(bits, int)) };
    }
    case SparkplugDataType.Float:
    case SparkplugDataType.Double: {
      const v = metric.float_value ?? metric.double_value;
      if (typeof v !== 'number') return { ok: false, reason: 'has no floating-point value' };
      return { ok: true, value: v };
    }
    case SparkplugDataType.Boolean:
      return typeof metric.boolean_value === 'boolean' ? { ok: true, value: metric.boolean_value } : { ok: false, reason: 'has no boolean value' };
    case SparkplugDataType.String:
    case SparkplugDataType.Text:
    case SparkplugDataType.UUID:
      return typeof metric.string_value === 'string' ? { ok: true, value: metric.string_value } : { ok: false, reason: 'has no string value' };
    default:
      return { ok: false, reason: `has datatype ${datatype}, which Ferry does not store (DataSet, Template, Bytes, File, arrays)` };
  }
}

function parseTopic(topic: string): { group: string; type: MessageType; edge: string; device: string | undefined } | undefined {
  const parts = topic.split('/');
  if (parts[0] !== SPARKPLUG_NAMESPACE || parts.length < 4 || parts.length > 5) return undefined;
  const [, group, type, edge, device] = parts;
  if (!group || !type || !edge || !MESSAGE_TYPES.has(type)) return undefined;
  if ((type.startsWith('D') && !device) || (type.startsWith('N') && device !== undefined)) return undefined;
  return { group, type: type as MessageType, edge, device };
}

/** Node Control and bdSeq are session bookkeeping, not measurements. */
function isBookkeeping(name: string): boolean {
  return name === 'bdSeq' || name.startsWith('Node Control/') || name.startsWith('Device Control/');
}

export function createSparkplugDecoder(state: SparkplugState = { nodes: createDeviceStateStore() }): Decoder {
  return {
    ...guarded('sparkplug-b', (input) => decodeSparkplug(input, state)),
    // Devices share their edge node's alias table and DEATH: the node routes them all.
    routingKey(topic) {
      const parsed = parseTopic(topic);
      return parsed ? `${parsed.group}/${parsed.edge}` : undefined;
    },
  };
}

function decodeSparkplug(input: DecodeInput, state: SparkplugState): DecodeOutcome {
  const topic = parseTopic(input.topic);
  if (!topic) return nothing; // STATE, NCMD, DCMD and other namespaces are not readings.
  const nodeKey = `${topic.group}/${topic.edge}`;
  const deviceId = topic.device !== undefined ? `${nodeKey}/${topic.device}` : nodeKey;
  let payload;
  try {
    payload = decodeSparkplugPayload(input.payload);
  } catch (err) {
    return rejected({ code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: `not a Sparkplug B payload: ${(err as Error).message.slice(0, 120)}` }, deviceId);
  }
  const metrics = payload.metrics ?? [];
  const payloadTs = payload.timestamp !== undefined ? Number(payload.timestamp) : undefined;

  if (topic.type === 'NDEATH') {
    const node = state.nodes.get(nodeKey);
    const bdSeq = metrics.find((m) => m.name === 'bdSeq');
    const deathSeq = bdSeq ? (bdSeq.long_value ?? (bdSeq.int_value !== undefined ? String(bdSeq.int_value) : undefined)) : undefined;
    // The NDEATH counts only for the session its NBIRTH opened: a Will of an earlier session (the
    // broker publishes it after the node reconnected) carries another bdSeq, or none at all.
    if (node?.bdSeq !== undefined && deathSeq !== node.bdSeq) return nothing;
    const outcomes = [availability(nodeKey, 'offline', input.receivedAt, input.limits, payloadTs)];
    for (const device of node?.devices ?? []) outcomes.push(availability(`${nodeKey}/${device}`, 'offline', input.receivedAt, input.limits, payloadTs));
    state.nodes.delete(nodeKey);
    return { readings: outcomes.flatMap((o) => o.readings), dropped: [], deviceId: nodeKey };
  }

  let seq: number | undefined;
  if (payload.seq !== undefined) {
    const n = Number(payload.seq);
    if (!(n >= 0 && n <= 255)) return rejected({ code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: `seq ${payload.seq.slice(0, 20)} is outside 0..255` }, deviceId);
    seq = n;
  }
  let node = state.nodes.get(nodeKey);
  const flags: string[] = [];
  if (topic.type === 'NBIRTH') {
    const bdSeq = metrics.find((m) => m.name === 'bdSeq');
    node = {
      aliases: new Map(),
      datatypes: new Map(),
      devices: new Set(),
      seq,
      bdSeq: bdSeq ? (bdSeq.long_value ?? (bdSeq.int_value !== undefined ? String(bdSeq.int_value) : undefined)) : undefined,
    };
    state.nodes.set(nodeKey, node);
  } else if (!node) {
    // No NBIRTH seen since this gateway started: named metrics can still be read, aliases cannot.
    flags.push('sparkplug_no_birth');
  } else {
    if (seq !== undefined && node.seq !== undefined && seq !== (node.seq + 1) % 256) flags.push('sparkplug_seq_gap');
    if (seq !== undefined) node.seq = seq;
  }
  const scope = topic.device ?? '';
  if (topic.type === 'DBIRTH' && node && topic.device !== undefined) {
    node.devices.add(topic.device);
    for (const key of [...node.datatypes.keys()]) if (key.startsWith(`${scope}/`)) node.datatypes.delete(key);
  }
  if (topic.type === 'DDEATH') {
    node?.devices.delete(scope);
    const outcome = availability(deviceId, 'offline', input.receivedAt, input.limits, payloadTs);
    return flags.length > 0 ? { ...outcome, readings: outcome.readings.map((r) => ({ ...r, flags })) } : outcome;
  }

  const dropped: Rejection[] = [];
  const byTime = new Map<string, Leaf[]>();
  for (const metric of metrics) {
    let name = metric.name;
    let datatype = metric.datatype;
    if (node && metric.alias !== undefined) {
      if (topic.type.endsWith('BIRTH') && name !== undefined && datatype !== undefined) {
        if (node.aliases.size < MAX_DEFINITIONS) node.aliases.set(metric.alias, { name, datatype });
      } else {
        const definition = node.aliases.get(metric.alias);
        name ??= definition?.name;
        datatype ??= definition?.datatype;
      }
    }
    if (name === undefined) {
      dropped.push({ code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: `metric alias ${metric.alias ?? '?'} was not defined by a BIRTH` });
      continue;
    }
    if (node && datatype !== undefined && topic.type.endsWith('BIRTH') && node.datatypes.size < MAX_DEFINITIONS) node.datatypes.set(`${scope}/${name}`, datatype);
    datatype ??= node?.datatypes.get(`${scope}/${name}`);
    if (isBookkeeping(name)) continue;
    if (datatype === undefined) {
      dropped.push({ code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: `metric "${name.slice(0, 60)}" has no datatype and none was given in a BIRTH` });
      continue;
    }
    const verdict = sparkplugValue(metric, datatype);
    if (verdict.ok === 'null') continue;
    if (!verdict.ok) {
      dropped.push({ code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: `metric "${name.slice(0, 60)}" ${verdict.reason}` });
      continue;
    }
    const ts = metric.timestamp ?? payload.timestamp ?? '';
    const leaves = byTime.get(ts) ?? [];
    leaves.push({ name, value: verdict.value });
    byTime.set(ts, leaves);
  }

  const results: DraftResult[] = [];
  for (const [ts, leaves] of byTime) {
    results.push(
      buildReading(
        { deviceId, kind: 'telemetry', leaves, ...(ts !== '' ? { tsMs: Number(ts) } : {}), flags },
        {
          receivedAt: input.receivedAt,
          limits: input.limits,
          // Names come from the PLC program and are kept as defined; values are typed by the datatype.
          defaults: {},
          coerce: input.options.coerce,
          timestampUnit: 'ms',
        },
      ),
    );
  }
  const outcome = outcomeOf(results, deviceId);
  const births = topic.type.endsWith('BIRTH') ? availability(deviceId, 'online', input.receivedAt, input.limits, payloadTs).readings : [];
  const readings = [...births, ...outcome.readings];
  const setAside = [...dropped, ...(outcome.rejection ? [outcome.rejection] : []), ...outcome.dropped];
  const first = setAside[0];
  if (readings.length === 0 && first) return { readings, dropped: setAside.slice(1), rejection: first, deviceId };
  return { readings, dropped: setAside, deviceId };
}
