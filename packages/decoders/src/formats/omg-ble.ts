// OpenMQTTGateway BLE: `home/<gateway>/BTtoMQTT/<MAC without colons>` with the decoded
// advertisement, e.g. `{"id":"A4:C1:38:5A:20:A1","model":"LYWSD03MMC","tempc":22.5,"hum":48,"batt":81,"rssi":-67}`.
// The device id is the MAC from the topic (or `id` with deviceIdField); `rssi` is kept as the
// device's link-health signal; raw advertisement data stays a string even when it is all digits.
import { guarded } from '../decoder.js';
import type { Decoder } from '../decoder.js';
import { deviceIdFrom, parseObject, readObjectMessage } from './json-object.js';
import type { ObjectFormat } from './json-object.js';

export const OMG_BLE: ObjectFormat = {
  what: 'OpenMQTTGateway BLE',
  snake: false,
  defaultUnit: 'auto',
  // `model` and `brand` describe the device and never change: tags, so each model's series stay apart.
  tagKeys: ['model', 'brand', 'model_id'],
  defaults: {
    exact: {
      id: 'string',
      mac: 'string',
      name: 'string',
      servicedata: 'string',
      servicedatauuid: 'string',
      manufacturerdata: 'string',
      uuid: 'string',
      type: 'string',
      rssi: 'number',
      txpower: 'number',
    },
  },
  // The MAC repeated as a metric adds nothing: the device id holds it.
  skipKeys: new Set(['id', 'mac']),
};

export function createOmgBleDecoder(): Decoder {
  return guarded('omg-ble', (input) => {
    const deviceId = input.match.deviceId;
    const parsed = parseObject(input, OMG_BLE.what, deviceId);
    if (!parsed.ok) return parsed.outcome;
    const id = deviceIdFrom(input, deviceId, parsed.value);
    if (typeof id !== 'string') return id.rejection;
    return readObjectMessage(input, id, parsed.value, OMG_BLE);
  });
}
