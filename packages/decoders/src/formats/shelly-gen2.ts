// Shelly Gen2/Gen3 RPC frames on `<prefix>/events/rpc`: NotifyFullStatus carries every component,
// NotifyStatus only what changed (`{"switch:0":{"current":0.5}}`). A partial update is merged
// into the device's last known status so it never wipes earlier values: the reading carries the
// whole merged status of each component the frame touched. `<prefix>/status/<component>` (the
// optional "generic status update" topics) feed the same state; `<prefix>/online` is availability.
import { deviceIdBefore, guarded, ignored, levelsFromId, nothing, rejected } from '../decoder.js';
import type { Decoder, DecodeInput, DecodeOutcome } from '../decoder.js';
import { availability, buildReading, draftContext, outcomeOf } from '../draft.js';
import { createDeviceStateStore } from '../device-state.js';
import type { DeviceStateStore } from '../device-state.js';
import { isPlainObject, parseDeviceJson, textOf } from '../json.js';
import { flatten, snakeCase } from '../names.js';
import type { Leaf } from '../names.js';

type Component = Record<string, unknown>;
type DeviceStatus = Map<string, Component>;

/** Most components remembered per device; a Pro 4PM has about 20. */
const MAX_COMPONENTS = 64;

function assign(target: Record<string, unknown>, key: string, value: unknown): void {
  // defineProperty, not `target[key] =`: a `__proto__` key from JSON must stay a plain key.
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

function clone(value: unknown, depth = 0): unknown {
  if (depth > 12 || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map((v) => clone(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) assign(out, k, clone(v, depth + 1));
  return out;
}

function mergeInto(target: Component, patch: Component, depth = 0): void {
  for (const [key, value] of Object.entries(patch)) {
    const current = Object.hasOwn(target, key) ? target[key] : undefined;
    if (depth < 12 && isPlainObject(current) && isPlainObject(value)) mergeInto(current, value, depth + 1);
    else assign(target, key, clone(value));
  }
}

export interface ShellyGen2State {
  readonly devices: DeviceStateStore<DeviceStatus>;
}

export function createShellyGen2Decoder(state: ShellyGen2State = { devices: createDeviceStateStore() }): Decoder {
  function apply(input: DecodeInput, deviceId: string, components: Component, full: boolean, rawTs: unknown): DecodeOutcome {
    const status: DeviceStatus = state.devices.get(deviceId) ?? new Map<string, Component>();
    const touched: string[] = [];
    for (const [name, value] of Object.entries(components)) {
      if (name === 'ts' || !isPlainObject(value)) continue;
      const current = status.get(name);
      if (full || !current) status.set(name, clone(value) as Component);
      else mergeInto(current, value);
      touched.push(name);
    }
    while (status.size > MAX_COMPONENTS) {
      const oldest = status.keys().next();
      if (oldest.done) break;
      status.delete(oldest.value);
    }
    state.devices.set(deviceId, status);
    if (touched.length === 0) return nothing;
    const leaves: Leaf[] = [];
    for (const name of touched) {
      const component = status.get(name);
      if (component) flatten(component, snakeCase(name), { snake: true, skipKeys: new Set(['id']) }, leaves);
    }
    const result = buildReading(
      { deviceId, kind: 'telemetry', leaves, rawTs },
      draftContext(input, {}, 's'),
    );
    return outcomeOf([result], deviceId);
  }

  return guarded('shelly-gen2', (input) => {
    const levels = levelsFromId(input.match);
    const last = levels[levels.length - 1];
    const beforeLast = levels[levels.length - 2];
    if (last === 'online' && levels.length > 1) {
      const deviceId = deviceIdBefore(input.match, 1) ?? input.match.deviceId;
      const text = textOf(input.payload).trim().toLowerCase();
      if (text !== 'true' && text !== 'false') {
        return rejected({ code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: 'Shelly online payload must be true or false' }, deviceId);
      }
      return availability(deviceId, text === 'true' ? 'online' : 'offline', input.receivedAt, input.limits);
    }
    const isRpc = beforeLast === 'events' && last === 'rpc';
    const isComponentStatus = beforeLast === 'status' && last !== undefined && levels.length > 2;
    if (!isRpc && !isComponentStatus) return nothing;
    const topicId = deviceIdBefore(input.match, 2);
    if (topicId === undefined) return nothing;
    const value = parseDeviceJson(textOf(input.payload));
    if (value === undefined) return rejected({ code: 'FERRY_ERR_PAYLOAD_JSON', reason: 'Shelly RPC frame is not valid JSON' }, topicId);
    if (!isPlainObject(value)) return rejected({ code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: 'Shelly RPC frame must be a JSON object' }, topicId);
    let deviceId = topicId;
    if (input.options.deviceIdField !== undefined) {
      const src = value[input.options.deviceIdField];
      if (typeof src !== 'string' || src.length === 0) {
        return rejected({ code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: `device id field "${input.options.deviceIdField}" is missing` }, topicId);
      }
      deviceId = src;
    }
    if (isComponentStatus) return apply(input, deviceId, { [last]: value }, true, undefined);
    const method = value.method;
    if (method !== 'NotifyStatus' && method !== 'NotifyFullStatus') return ignored(`Shelly ${typeof method === 'string' ? method.slice(0, 40) : 'RPC frame'} (not a status)`, deviceId);
    const params = value.params;
    if (!isPlainObject(params)) return rejected({ code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: `${method} has no params object` }, deviceId);
    return apply(input, deviceId, params, method === 'NotifyFullStatus', params.ts);
  });
}
