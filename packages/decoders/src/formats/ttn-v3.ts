// The Things Stack v3 uplinks on `v3/<app>@<tenant>/devices/<device>/up`: the payload formatter's
// `decoded_payload` becomes the metrics, the best gateway's RSSI/SNR from `rx_metadata` are the
// radio-link health signals (`rssi`, `snr`), `received_at` (the network's receive time) is the
// reading time, and the frame counter and port are kept (`f_cnt` metric, `f_port` tag).
import { deviceIdBefore, guarded, ignored, levelsFromId, nothing, rejected } from '../decoder.js';
import type { Decoder } from '../decoder.js';
import { buildReading, draftContext, outcomeOf } from '../draft.js';
import { isPlainObject, parseDeviceJson, textOf, valueAt } from '../json.js';
import { flatten } from '../names.js';
import type { Leaf } from '../names.js';

/** Other TTS message types (join, downlink events, location) are not readings. */
const UPLINK = 'up';

function best(values: readonly unknown[]): number | undefined {
  const numbers = values.filter((v): v is number => typeof v === 'number' && Number.isFinite(v));
  return numbers.length > 0 ? Math.max(...numbers) : undefined;
}

export function createTtnV3Decoder(): Decoder {
  return guarded('ttn-v3', (input) => {
    const levels = levelsFromId(input.match);
    if (levels[levels.length - 1] !== UPLINK) return ignored(`The Things Stack ${(levels[levels.length - 1] ?? '').slice(0, 40)} (not an uplink)`);
    const topicId = deviceIdBefore(input.match, 1);
    if (topicId === undefined) return nothing;
    const value = parseDeviceJson(textOf(input.payload));
    if (value === undefined) return rejected({ code: 'FERRY_ERR_PAYLOAD_JSON', reason: 'uplink message is not valid JSON' }, topicId);
    if (!isPlainObject(value)) return rejected({ code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: 'uplink message must be a JSON object' }, topicId);
    const uplink = value.uplink_message;
    if (!isPlainObject(uplink)) return rejected({ code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: 'uplink message has no uplink_message object' }, topicId);
    let deviceId = topicId;
    if (input.options.deviceIdField !== undefined) {
      const id = valueAt(value, input.options.deviceIdField);
      if (typeof id !== 'string' || id.length === 0) {
        return rejected({ code: 'FERRY_ERR_PAYLOAD_SCHEMA', reason: `device id field "${input.options.deviceIdField}" is missing` }, topicId);
      }
      deviceId = id;
    }
    const leaves: Leaf[] = [];
    const decoded = uplink.decoded_payload;
    if (decoded !== undefined) {
      if (isPlainObject(decoded)) flatten(decoded, '', { snake: false }, leaves);
      else leaves.push({ name: 'decoded_payload', value: decoded });
    }
    const rx = Array.isArray(uplink.rx_metadata) ? uplink.rx_metadata.filter(isPlainObject) : [];
    const rssi = best(rx.map((m) => m.rssi ?? m.channel_rssi));
    const snr = best(rx.map((m) => m.snr));
    if (rssi !== undefined) leaves.push({ name: 'rssi', value: rssi });
    if (snr !== undefined) leaves.push({ name: 'snr', value: snr });
    if (rx.length > 0) leaves.push({ name: 'gateway_count', value: rx.length });
    if (typeof uplink.f_cnt === 'number') leaves.push({ name: 'f_cnt', value: uplink.f_cnt });
    const tags: Record<string, string> = {};
    const app = valueAt(value, 'end_device_ids.application_ids.application_id');
    if (typeof app === 'string' && app.length > 0) tags.application_id = app;
    if (typeof uplink.f_port === 'number') tags.f_port = String(uplink.f_port);
    const rawTs = value.received_at ?? uplink.received_at;
    const result = buildReading(
      { deviceId, kind: 'telemetry', leaves, rawTs, tags },
      draftContext(input, {}, 'iso'),
    );
    return outcomeOf([result], deviceId);
  });
}
