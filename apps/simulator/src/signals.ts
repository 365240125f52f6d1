// Plausible sensor signals for simulated devices. Pure: a seed and the reading time in, the
// next metrics out, so a seeded run is reproducible and testable without timers.

/** A deterministic PRNG (mulberry32): uniform in [0, 1). */
export function createPrng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Mixes a run seed with a device id (FNV-1a), so each device has its own stream whatever the order of ticks. */
export function deviceSeed(seed: number, deviceId: string): number {
  let hash = 0x811c9dc5 ^ (seed >>> 0);
  for (let i = 0; i < deviceId.length; i++) {
    hash ^= deviceId.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}

/** Standard normal deviate (Box-Muller). */
function gaussian(random: () => number): number {
  const u = 1 - random();
  const v = random();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

function round(value: number, decimals: number): number {
  const f = 10 ** decimals;
  return Math.round(value * f) / f;
}

function clamp(value: number, min: number, max: number): number {
  return Math.min(max, Math.max(min, value));
}

export interface DeviceMetrics {
  /** Degrees Celsius. */
  readonly temperature: number;
  /** Relative humidity, percent. */
  readonly humidity: number;
  /** Battery charge, percent; never rises. */
  readonly battery: number;
  /** Received signal strength, dBm. */
  readonly rssi: number;
}

export interface DeviceSignals {
  /** The metrics of the next reading, taken at `ts` (epoch ms). */
  next(ts: number): DeviceMetrics;
  /** Whether the device misses this reading (a dropout); draws from its own stream. */
  missesReading(probability: number): boolean;
}

const DAY_MS = 86_400_000;
/** The daily temperature peak, in hours after midnight UTC. */
const PEAK_HOUR = 15;

/** One device's signals: a daily temperature cycle, humidity moving against it, a draining battery, a wandering RSSI. */
export function createDeviceSignals(deviceId: string, seed: number): DeviceSignals {
  const random = createPrng(deviceSeed(seed, deviceId));
  const dropouts = createPrng(deviceSeed(seed ^ 0x5bd1e995, deviceId));
  // Each device sits somewhere different: its own mean, swing, humidity and radio distance.
  const meanTemp = 18 + random() * 6;
  const swing = 2 + random() * 4;
  const meanHumidity = 45 + random() * 15;
  const drainPerReading = 0.0005 + random() * 0.002;
  const meanRssi = -85 + random() * 40;
  let battery = 60 + random() * 40;
  let rssi = meanRssi;
  let drift = 0;

  return {
    next(ts) {
      const dayPhase = ((ts % DAY_MS) / DAY_MS - PEAK_HOUR / 24) * 2 * Math.PI;
      // A slow random walk on top of the daily cycle, pulled back towards zero.
      drift = drift * 0.98 + gaussian(random) * 0.05;
      const daily = swing * Math.cos(dayPhase) + drift;
      const temperature = meanTemp + daily + gaussian(random) * 0.15;
      const humidity = clamp(meanHumidity - daily * 2.5 + gaussian(random) * 0.8, 0, 100);
      battery = Math.max(0, battery - drainPerReading * (0.5 + random()));
      rssi = clamp(rssi + (meanRssi - rssi) * 0.1 + gaussian(random) * 1.5, -120, -30);
      return {
        temperature: round(temperature, 2),
        humidity: round(humidity, 1),
        battery: round(battery, 2),
        rssi: Math.round(rssi),
      };
    },
    missesReading(probability) {
      return probability > 0 && dropouts() < probability;
    },
  };
}
