// Stage 2 at the device boundary (issue #17): hostile input is refused with a code, or set aside
// field by field with the rest of the reading kept, by the same rules the database applies.
import { describe, expect, it } from 'vitest';
import { defaultLimits, fieldRejection } from '@ferry/protocol';
import { createDeviceMessageValidator } from '../src/validate.js';

const NOW = Math.floor(Date.now() / 1000) * 1000;
const validator = createDeviceMessageValidator(
  [
    { pattern: 'devices/{deviceId}/telemetry' },
    { pattern: 'z2m/{deviceId#}', format: 'flat', coerce: { temperature: 'number' } },
    { pattern: 'telegraf/{deviceId}/#', format: 'influx-line' },
  ],
  defaultLimits,
);

function validate(topic: string, payload: string | Buffer) {
  return validator.validate(topic, typeof payload === 'string' ? Buffer.from(payload) : payload, NOW);
}

describe('the gateway device boundary', () => {
  it('refuses invalid UTF-8 with FERRY_ERR_PAYLOAD_ENCODING', () => {
    const latin1 = Buffer.from('{"metrics":{"K\u00fcche":1}}', 'latin1');
    expect(validate('devices/d1/telemetry', latin1)).toMatchObject({ ok: false, rejection: { code: 'FERRY_ERR_PAYLOAD_ENCODING' } });
    expect(validate('z2m/d1', latin1)).toMatchObject({ ok: false, rejection: { code: 'FERRY_ERR_PAYLOAD_ENCODING' } });
  });

  it('refuses a device id that climbs levels or hides characters, and merges NFC twins', () => {
    for (const id of ['../../admin', 'a\u202Eb', 'a\u200Bb']) {
      expect(validate(`z2m/${id}`, '{"t":1}')).toMatchObject({ ok: false, rejection: { code: 'FERRY_ERR_DEVICE_ID_INVALID' } });
    }
    const a = validate('devices/K\u00fcche/telemetry', '{"metrics":{"t":1}}');
    const b = validate('devices/Ku\u0308che/telemetry', '{"metrics":{"t":1}}');
    expect(a.ok && a.readings[0]?.deviceId).toBe('K\u00fcche');
    expect(b.ok && b.readings[0]?.deviceId).toBe('K\u00fcche');
  });

  it('sets aside a field the database would refuse and keeps the good ones, by the rules the sinks apply', () => {
    const verdict = validate('devices/d1/telemetry', JSON.stringify({ metrics: { 'bad"name': 1, 'end\\': 2, good: 3 } }));
    expect(verdict.ok).toBe(true);
    if (!verdict.ok) return;
    expect(verdict.readings[0]?.metrics).toEqual({ good: 3 });
    expect(verdict.dropped.map((d) => d.code)).toEqual(['FERRY_ERR_NAME_INVALID', 'FERRY_ERR_NAME_INVALID']);
    for (const [name, value] of Object.entries(verdict.readings[0]?.metrics ?? {})) expect(fieldRejection(name, value)).toBeUndefined();
  });

  it('sets aside true under a number rule and keeps the rest', () => {
    const verdict = validate('z2m/d1', '{"temperature":true,"humidity":40}');
    expect(verdict.ok && verdict.readings[0]?.metrics).toEqual({ humidity: 40 });
    expect(verdict.ok && verdict.dropped.map((d) => d.code)).toEqual(['FERRY_ERR_PAYLOAD_SCHEMA']);
  });

  it('refuses an impossible date', () => {
    expect(validate('z2m/d1', '{"ts":"2025-02-29T10:00:00Z","t":1}')).toMatchObject({ ok: false, rejection: { code: 'FERRY_ERR_PAYLOAD_SCHEMA' } });
  });

  it('matches a trailing # against the level before it', () => {
    const verdict = validate('telegraf/pi', `cpu idle=1 ${NOW}000000`);
    expect(verdict.ok && verdict.readings.map((r) => r.metrics)).toEqual([{ cpu_idle: 1 }]);
  });

  it('names every failing line of a line-protocol message', () => {
    const mixed = validate('telegraf/pi/x', 'cpu idle=1\ncpu idle=\nmem x\n');
    expect(mixed.ok && mixed.dropped.map((d) => d.reason)).toEqual([expect.stringContaining('line 2'), expect.stringContaining('line 3')]);
    const allBad = validate('telegraf/pi/x', 'cpu idle=\nmem x\n');
    expect(allBad.ok === false && allBad.rejection.reason).toMatch(/line 1.*line 2/);
  });
});
