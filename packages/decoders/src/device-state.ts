// Per-device memory for stateful formats (Sparkplug alias tables, Shelly Gen2 merged status).
// Bounded: the least recently used device is forgotten first, and forgetting is counted.

export interface DeviceStateStore<T> {
  get(deviceId: string): T | undefined;
  set(deviceId: string, state: T): void;
  delete(deviceId: string): void;
  /** Keys starting with `prefix` (e.g. every device of one Sparkplug edge node). */
  deleteWithPrefix(prefix: string): void;
  readonly size: number;
  /** Devices forgotten because the bound was reached. */
  readonly evicted: number;
}

export const DEFAULT_MAX_DEVICES = 10_000;

export function createDeviceStateStore<T>(maxDevices = DEFAULT_MAX_DEVICES): DeviceStateStore<T> {
  const entries = new Map<string, T>();
  let evicted = 0;
  return {
    get(deviceId) {
      const state = entries.get(deviceId);
      if (state !== undefined) {
        // Map keeps insertion order: moving the entry to the end makes the first one the least recent.
        entries.delete(deviceId);
        entries.set(deviceId, state);
      }
      return state;
    },
    set(deviceId, state) {
      entries.delete(deviceId);
      entries.set(deviceId, state);
      while (entries.size > maxDevices) {
        const oldest = entries.keys().next();
        if (oldest.done) break;
        entries.delete(oldest.value);
        evicted++;
      }
    },
    delete(deviceId) {
      entries.delete(deviceId);
    },
    deleteWithPrefix(prefix) {
      for (const key of [...entries.keys()]) if (key.startsWith(prefix)) entries.delete(key);
    },
    get size() {
      return entries.size;
    },
    get evicted() {
      return evicted;
    },
  };
}
