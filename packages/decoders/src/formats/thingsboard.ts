// ThingsBoard's MQTT APIs. Device API, `v1/devices/<id>/telemetry`: `{"temperature":21}`, an array
// of such objects, `{"ts":1451649600512,"values":{...}}`, or an array of those. Gateway API,
// `v1/gateway/telemetry`: `{"Device A":[{"ts":..,"values":{..}}],"Device B":[...]}`, each key a
// device of its own; `v1/gateway/connect|disconnect` `{"device":"Device A"}` is its availability.
// Every sample is one reading: a bad one is set aside alone, the others are kept.
import { guarded, ignored, rejected } from '../decoder.js';
import type { Decoder, DecodeInput, DecodeOutcome } from '../decoder.js';
import { availability, buildReading, draftContext, outcomeOf } from '../draft.js';
import type { DraftResult } from '../draft.js';
import { isPlainObject, parseDeviceJson, textOf, valueAt } from '../json.js';
import { flatten } from '../names.js';
import { decodeAvailability } from './flat.js';

/** ThingsBoard's own topic says `me`: the device is the MQTT connection, which a decoder does not see. */
const SELF = 'me';

function failed(reason: string): DraftResult {
  return { ok: false, rejection: { code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason }, dropped: [] };
}

/** Names where a sample sat (`sample 2 of "Device B"`), so its dead letter can be found in the payload. */
function located(result: DraftResult, where: string): DraftResult {
  return result.ok ? result : { ...result, rejection: { ...result.rejection, reason: `${where}: ${result.rejection.reason}`.slice(0, 300) } };
}

/** One sample: `{"ts":..,"values":{..}}` (device time) or a plain key-value object (receive time). */
function readSample(input: DecodeInput, deviceId: string, sample: unknown): DraftResult {
  if (!isPlainObject(sample)) return failed('a sample must be a JSON object');
  const timed = Object.hasOwn(sample, 'values');
  const values = timed ? sample.values : sample;
  if (!isPlainObject(values)) return failed('"values" must be a JSON object');
  const leaves = flatten(values, '', { snake: false });
  return buildReading(
    { deviceId, kind: 'telemetry', leaves, ...(timed && sample.ts !== undefined ? { rawTs: sample.ts } : {}) },
    draftContext(input, {}, 'ms'),
  );
}

function samplesOf(body: unknown): readonly unknown[] {
  return Array.isArray(body) ? body : [body];
}

/** The device API: one device, its id from the topic level before `telemetry` or from `deviceIdField`. */
function deviceTelemetry(input: DecodeInput, topicId: string, body: unknown): DecodeOutcome {
  const samples = samplesOf(body);
  if (samples.length === 0) return rejected({ code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: 'ThingsBoard telemetry holds no sample' }, topicId);
  const field = input.options.deviceIdField;
  if (field === undefined && topicId === SELF) {
    return rejected(
      { code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: 'the topic names the device "me" (ThingsBoard\'s own topic): set deviceIdField, or publish on v1/devices/<device id>/telemetry' },
      topicId,
    );
  }
  const results = samples.map((sample, i) => {
    let deviceId = topicId;
    if (field !== undefined) {
      // The id may sit in each sample's values (a buffered batch) or at the top of a single object.
      const values = isPlainObject(sample) && isPlainObject(sample.values) ? sample.values : sample;
      const id = valueAt(values, field) ?? valueAt(sample, field);
      if (typeof id === 'string' && id.length > 0) deviceId = id;
      else if (typeof id === 'number' && Number.isFinite(id)) deviceId = String(id);
      else return located(failed(`device id field "${field}" is missing or not a string`), `sample ${i + 1}`);
    }
    return located(readSample(input, deviceId, sample), samples.length > 1 ? `sample ${i + 1}` : 'sample');
  });
  const first = results.find((r) => r.ok && r.reading !== undefined);
  return outcomeOf(results, first?.ok && first.reading ? first.reading.deviceId : topicId);
}

/** The gateway API: each key a device of its own, validated as any device id. */
function gatewayTelemetry(input: DecodeInput, topicId: string, body: unknown): DecodeOutcome {
  if (!isPlainObject(body)) return rejected({ code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: 'ThingsBoard gateway telemetry must be a JSON object keyed by device name' }, topicId);
  const devices = Object.entries(body);
  if (devices.length === 0) return rejected({ code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: 'ThingsBoard gateway telemetry names no device' }, topicId);
  const results: DraftResult[] = [];
  for (const [name, value] of devices) {
    const samples = samplesOf(value);
    if (samples.length === 0) results.push(failed(`device "${name.slice(0, 60)}": no sample`));
    samples.forEach((sample, i) => results.push(located(readSample(input, name, sample), `sample ${i + 1} of "${name.slice(0, 60)}"`)));
  }
  // The message is about several devices: the dead letter of a whole refusal names the first.
  return outcomeOf(results, devices.length === 1 ? devices[0]?.[0] : undefined);
}

function gatewayAvailability(input: DecodeInput, topicId: string, body: unknown, state: 'online' | 'offline'): DecodeOutcome {
  const device = isPlainObject(body) ? body.device : undefined;
  if (typeof device !== 'string' || device.length === 0) {
    return rejected({ code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: 'ThingsBoard gateway connect/disconnect needs {"device": "<name>"}' }, topicId);
  }
  return availability(device, state, input.receivedAt, input.limits);
}

export function createThingsboardDecoder(): Decoder {
  return guarded('thingsboard', (input) => {
    const levels = input.topic.split('/');
    const last = levels[levels.length - 1] ?? '';
    const before = levels[levels.length - 2] ?? '';
    const topicId = input.match.deviceId;
    if (input.options.kind === 'status') return decodeAvailability(input, topicId);
    const gateway = before === 'gateway';
    if (last !== 'telemetry' && !(gateway && (last === 'connect' || last === 'disconnect'))) {
      // Attributes, RPC requests and answers, claiming, provisioning: not time series.
      const api = levels.includes('attributes') ? 'attributes' : levels.includes('rpc') ? 'RPC' : last;
      return ignored(`ThingsBoard ${api.slice(0, 40)} (not telemetry)`, topicId);
    }
    const text = textOf(input.payload);
    const body = parseDeviceJson(text);
    if (body === undefined) {
      const shown = JSON.stringify(text.length > 60 ? `${text.slice(0, 60)}...` : text);
      return rejected({ code: 'FERRY_ERR_PAYLOAD_JSON', reason: `ThingsBoard payload is not valid JSON: ${shown}` }, topicId);
    }
    if (gateway && last === 'telemetry') return gatewayTelemetry(input, topicId, body);
    if (gateway) return gatewayAvailability(input, topicId, body, last === 'connect' ? 'online' : 'offline');
    return deviceTelemetry(input, before, body);
  });
}
