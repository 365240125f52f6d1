// Property: no input makes a decoder throw; every answer is readings and/or typed rejections.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { defaultLimits, errorCodes, readingSchema } from '@ferry/protocol';
import { createDecoderSet, encodeSparkplugPayload, FORMAT_NAMES, SparkplugDataType } from '../src/index.js';
import type { DecoderSetOutcome, FormatName } from '../src/index.js';

const NOW = Date.UTC(2026, 10, 25, 12);

const PATTERNS: Record<FormatName, string> = {
  ferry: 'devices/{deviceId}/telemetry',
  flat: 'z2m/{deviceId#}',
  tasmota: 'tele/{deviceId}/+',
  'shelly-gen1': 'shellies/{deviceId}/#',
  'shelly-gen2': 'gen2/{deviceId#}',
  esphome: 'esp/{deviceId#}',
  homeassistant: 'ha/{deviceId}/state',
  'omg-ble': 'home/+/BTtoMQTT/{deviceId}',
  'influx-line': 'telegraf/{deviceId}/+',
  'ttn-v3': 'v3/+/devices/{deviceId}/up',
  'sparkplug-b': 'spBv1.0/{deviceId#}',
  thingsboard: 'v1/{deviceId#}',
  scalar: 'sensors/{deviceId}/+',
};

const TOPICS: Record<FormatName, readonly string[]> = {
  ferry: ['devices/d1/telemetry'],
  flat: ['z2m/a', 'z2m/a b/c', 'z2m/a/availability', 'z2m/a/set'],
  tasmota: ['tele/p/SENSOR', 'tele/p/STATE', 'tele/p/LWT', 'tele/p/RESULT', 'tele/p/POWER1', 'tele/p/STATUS10', 'tele/p/STATUS'],
  'shelly-gen1': ['shellies/s/relay/0', 'shellies/s/relay/0/power', 'shellies/s/online', 'shellies/s/input_event/0'],
  'shelly-gen2': ['gen2/s/events/rpc', 'gen2/s/online', 'gen2/s/status/switch:0'],
  esphome: ['esp/n/sensor/t/state', 'esp/n/binary_sensor/b/state', 'esp/n/light/l/state', 'esp/n/status'],
  homeassistant: ['ha/x/state'],
  'omg-ble': ['home/gw/BTtoMQTT/AABBCCDDEEFF'],
  'influx-line': ['telegraf/h/cpu'],
  'ttn-v3': ['v3/app@ttn/devices/d/up'],
  'sparkplug-b': ['spBv1.0/g/NBIRTH/e', 'spBv1.0/g/NDATA/e', 'spBv1.0/g/DDATA/e/d', 'spBv1.0/g/NDEATH/e', 'spBv1.0/g/DDEATH/e/d'],
  thingsboard: ['v1/devices/me/telemetry', 'v1/devices/d1/telemetry', 'v1/gateway/telemetry', 'v1/gateway/connect', 'v1/devices/me/attributes'],
  scalar: ['sensors/s1/temperature', 'sensors/s1/x'],
};

/** Options some formats need (config validation refuses the pattern without them). */
const OPTIONS: Partial<Record<FormatName, Record<string, unknown>>> = {
  scalar: { scalar: { metric: '{-1}', type: 'number' } },
};

const codes = new Set<string>(errorCodes);

function checkOutcome(outcome: DecoderSetOutcome): void {
  for (const reading of outcome.readings) expect(readingSchema.safeParse({ ...reading, seq: 0 }).success).toBe(true);
  for (const r of outcome.dropped) expect(codes.has(r.code)).toBe(true);
  if (outcome.rejection) {
    expect(codes.has(outcome.rejection.code)).toBe(true);
    // The guard's catch-all answer would mean a decoder hit an exception it did not foresee.
    expect(outcome.rejection.reason).not.toMatch(/payload could not be read/);
    expect(outcome.readings).toEqual([]);
  }
  if (outcome.ignored !== undefined) {
    // Ignored is its own outcome: never with readings, values set aside or a rejection.
    expect(outcome).toMatchObject({ readings: [], dropped: [] });
    expect(outcome.rejection).toBeUndefined();
  }
}

/** JSON-ish text: real JSON of arbitrary shape, with firmware quirks spliced in. */
const jsonish = fc.oneof(
  fc.json(),
  fc.jsonValue().map((v) => JSON.stringify({ params: v, method: 'NotifyStatus', uplink_message: { decoded_payload: v, rx_metadata: [v] } })),
  fc.tuple(fc.json(), fc.constantFrom('NaN', 'nan', '-inf', 'Infinity', '1e999', '99999999999999999999', '"__proto__"', '{"__proto__":{"x":1}}')).map(([j, q]) => j.replace(/\d+(\.\d+)?/, q)),
  fc.string(),
  fc.string({ unit: 'binary' }),
);

const sparkplugPayload = fc
  .array(
    fc.record({
      name: fc.option(fc.constantFrom('a', 'b', 'bdSeq', 'Node Control/Rebirth', '__proto__', 'constructor'), { nil: undefined }),
      alias: fc.option(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), { nil: undefined }),
      datatype: fc.integer({ min: 0, max: 40 }),
      value: fc.oneof(fc.integer(), fc.bigInt({ min: -(2n ** 63n), max: 2n ** 64n - 1n }), fc.double(), fc.boolean(), fc.string()),
    }),
    { maxLength: 6 },
  )
  .chain((metrics) =>
    fc.record({ seq: fc.integer({ min: 0, max: 300 }), timestamp: fc.oneof(fc.constant(NOW), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n })) }).map(({ seq, timestamp }) => {
      try {
        return encodeSparkplugPayload({
          seq,
          timestamp,
          metrics: metrics.map((m) => {
            const valid = ([SparkplugDataType.Float, SparkplugDataType.Double].includes(m.datatype as 9) && typeof m.value !== 'number') ||
              (m.datatype === SparkplugDataType.Boolean && typeof m.value !== 'boolean') ||
              (m.datatype === SparkplugDataType.String && typeof m.value !== 'string');
            return { datatype: m.datatype, ...(m.name !== undefined ? { name: m.name } : {}), ...(m.alias !== undefined ? { alias: m.alias } : {}), ...(valid ? {} : { value: typeof m.value === 'string' && m.datatype < 9 ? 1 : m.value }) };
          }),
        });
      } catch {
        return new Uint8Array([0x0a, 0x02, 0x08]);
      }
    }),
  );

describe('decoders never throw', () => {
  for (const format of FORMAT_NAMES) {
    it(`${format}: any bytes on any of its topics give readings or typed rejections`, () => {
      const set = createDecoderSet([{ pattern: PATTERNS[format], format, ...OPTIONS[format] }]);
      const payloads = format === 'sparkplug-b' ? fc.oneof(sparkplugPayload, fc.uint8Array({ maxLength: 200 })) : fc.oneof(jsonish.map((s) => Buffer.from(s)), fc.uint8Array({ maxLength: 200 }));
      fc.assert(
        fc.property(fc.constantFrom(...TOPICS[format]), payloads, fc.integer({ min: 0, max: 2 * NOW }), (topic, payload, receivedAt) => {
          let outcome: DecoderSetOutcome | undefined;
          expect(() => {
            outcome = set.decode(topic, payload, receivedAt, defaultLimits);
          }).not.toThrow();
          if (outcome) checkOutcome(outcome);
        }),
        { numRuns: 400 },
      );
    });
  }

  it('flat: any object with arbitrary keys and values', () => {
    const set = createDecoderSet([{ pattern: 'z/{deviceId}', format: 'flat', coerce: Object.fromEntries([['constructor', 'number'], ['a', 'boolean']] as const) }]);
    fc.assert(
      fc.property(fc.dictionary(fc.string(), fc.jsonValue()), (obj) => {
        checkOutcome(set.decode('z/d', Buffer.from(JSON.stringify(obj)), NOW, defaultLimits));
      }),
      { numRuns: 300 },
    );
  });
});
