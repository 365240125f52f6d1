import { describe, expect, it } from 'vitest';
import { createDeviceSignals, createPrng, deviceSeed } from '../src/signals.js';

const HOUR = 3_600_000;
const DAY0 = Date.UTC(2025, 5, 1);

function series(deviceId: string, seed: number, count: number, stepMs = 60_000) {
  const signals = createDeviceSignals(deviceId, seed);
  return Array.from({ length: count }, (_, i) => signals.next(DAY0 + i * stepMs));
}

function correlation(xs: number[], ys: number[]): number {
  const mean = (v: number[]) => v.reduce((a, b) => a + b, 0) / v.length;
  const mx = mean(xs);
  const my = mean(ys);
  let sxy = 0;
  let sxx = 0;
  let syy = 0;
  xs.forEach((x, i) => {
    const y = ys[i]!;
    sxy += (x - mx) * (y - my);
    sxx += (x - mx) ** 2;
    syy += (y - my) ** 2;
  });
  return sxy / Math.sqrt(sxx * syy);
}

describe('signals', () => {
  it('yields the same readings for the same seed and device', () => {
    expect(series('sim-3', 42, 50)).toEqual(series('sim-3', 42, 50));
  });

  it('yields different readings for another seed or another device', () => {
    expect(series('sim-3', 42, 5)).not.toEqual(series('sim-3', 43, 5));
    expect(series('sim-3', 42, 5)).not.toEqual(series('sim-4', 42, 5));
  });

  it('draws uniform numbers in [0, 1) reproducibly', () => {
    const a = createPrng(7);
    const b = createPrng(7);
    const draws = Array.from({ length: 1000 }, () => a());
    expect(draws).toEqual(Array.from({ length: 1000 }, () => b()));
    expect(draws.every((x) => x >= 0 && x < 1)).toBe(true);
    expect(deviceSeed(1, 'a')).not.toBe(deviceSeed(1, 'b'));
  });

  it('warms in the afternoon and cools at night', () => {
    const afternoon: number[] = [];
    const night: number[] = [];
    for (let d = 0; d < 20; d++) {
      const signals = createDeviceSignals(`dev-${d}`, 1);
      for (let h = 0; h < 48; h++) {
        const reading = signals.next(DAY0 + h * HOUR);
        if (h % 24 === 15) afternoon.push(reading.temperature);
        if (h % 24 === 3) night.push(reading.temperature);
      }
    }
    const avg = (v: number[]) => v.reduce((a, b) => a + b, 0) / v.length;
    expect(avg(afternoon) - avg(night)).toBeGreaterThan(3);
  });

  it('moves humidity against temperature', () => {
    const day = series('sim-0', 9, 24 * 12, 5 * 60_000);
    expect(correlation(day.map((r) => r.temperature), day.map((r) => r.humidity))).toBeLessThan(-0.8);
    expect(day.every((r) => r.humidity >= 0 && r.humidity <= 100)).toBe(true);
  });

  it('drains the battery slowly and never recharges it', () => {
    const readings = series('sim-1', 5, 2000);
    const battery = readings.map((r) => r.battery);
    expect(battery.every((b, i) => i === 0 || b <= battery[i - 1]!)).toBe(true);
    expect(battery[0]! - battery.at(-1)!).toBeGreaterThan(0.5);
    expect(battery.every((b) => b >= 0 && b <= 100)).toBe(true);
  });

  it('keeps rssi a whole number of dBm in a radio-plausible range', () => {
    const rssi = series('sim-2', 3, 500).map((r) => r.rssi);
    expect(rssi.every((v) => Number.isInteger(v) && v >= -120 && v <= -30)).toBe(true);
    expect(new Set(rssi).size).toBeGreaterThan(3);
  });

  it('misses readings about as often as asked, never at 0 and always at 1', () => {
    const signals = createDeviceSignals('sim-5', 11);
    const misses = Array.from({ length: 10_000 }, () => signals.missesReading(0.1)).filter(Boolean).length;
    expect(misses).toBeGreaterThan(800);
    expect(misses).toBeLessThan(1200);
    expect(Array.from({ length: 100 }, () => signals.missesReading(0)).some(Boolean)).toBe(false);
    expect(Array.from({ length: 100 }, () => signals.missesReading(1)).every(Boolean)).toBe(true);
  });
});
