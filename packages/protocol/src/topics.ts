// Every topic Ferry uses is spelled here and nowhere else.

/** Default device topic patterns; `{deviceId}` names the level that carries the device id. */
export const DEFAULT_DEVICE_PATTERNS = {
  telemetry: 'devices/{deviceId}/telemetry',
  status: 'devices/{deviceId}/status',
} as const;

const UPLINK_ROOT = 'ferry/v1/gw';

export const uplinkTopics = {
  /** Gateway -> ingestor: batch envelopes. */
  batch: (gatewayId: string): string => `${UPLINK_ROOT}/${gatewayId}/batch`,
  /** Ingestor -> gateway: end-to-end acks. */
  ack: (gatewayId: string): string => `${UPLINK_ROOT}/${gatewayId}/ack`,
  /** Gateway status, retained, with a Last Will of offline. */
  status: (gatewayId: string): string => `${UPLINK_ROOT}/${gatewayId}/status`,
  /** Gateway -> ingestor: the gateway's dead-letter reports and replay results (deadletter-report.ts). */
  deadLetters: (gatewayId: string): string => `${UPLINK_ROOT}/${gatewayId}/deadletters`,
  /** Ingestor -> gateway: acks of dead-letter reports and replay requests. */
  deadLetterControl: (gatewayId: string): string => `${UPLINK_ROOT}/${gatewayId}/deadletters-ctl`,
  /** What an ingestor subscribes to for the dead-letter reports of all gateways. */
  allDeadLetters: `${UPLINK_ROOT}/+/deadletters`,
  /** What an ingestor subscribes to for batches of all gateways. */
  allBatches: `${UPLINK_ROOT}/+/batch`,
  /** What an ingestor (or `ferry status`) subscribes to for gateway statuses. */
  allStatuses: `${UPLINK_ROOT}/+/status`,
} as const;

export type UplinkTopicKind = 'batch' | 'ack' | 'status' | 'deadletters' | 'deadletters-ctl';

const UPLINK_KINDS: ReadonlySet<string> = new Set<UplinkTopicKind>(['batch', 'ack', 'status', 'deadletters', 'deadletters-ctl']);

/** Extracts the gateway id from an uplink topic, or undefined when it is not one. */
export function parseUplinkTopic(topic: string): { gatewayId: string; kind: UplinkTopicKind } | undefined {
  const parts = topic.split('/');
  if (parts.length !== 5 || `${parts[0]}/${parts[1]}/${parts[2]}` !== UPLINK_ROOT) return undefined;
  const gatewayId = parts[3];
  const kind = parts[4];
  if (!gatewayId || kind === undefined || !UPLINK_KINDS.has(kind)) return undefined;
  return { gatewayId, kind: kind as UplinkTopicKind };
}

/** A valid gateway or device id: no MQTT wildcards or separators, no control characters. */
export const ID_PATTERN = /^[^/#+\u0000-\u001f]{1,128}$/;

export type TopicKind = 'telemetry' | 'status';

export interface CompiledPattern {
  readonly pattern: string;
  readonly kind: TopicKind;
  /** The MQTT subscription filter equivalent to the pattern. */
  readonly filter: string;
  match(topic: string): { deviceId: string } | undefined;
}

/**
 * Compiles a topic pattern such as `devices/{deviceId}/telemetry` or `tele/{deviceId}/SENSOR`.
 * Levels: a literal, `+` (any one level), `{deviceId}` (one level, the id), `{deviceId#}`
 * (the rest of the topic, ids may contain `/`, last level only) or `#` (the rest, last only).
 */
export function compilePattern(pattern: string, kind: TopicKind): CompiledPattern {
  const levels = pattern.split('/');
  let idIndex = -1;
  let idIsRest = false;
  levels.forEach((level, i) => {
    const last = i === levels.length - 1;
    if (level === '{deviceId}' || level === '{deviceId#}') {
      if (idIndex !== -1) throw new Error(`pattern "${pattern}" names {deviceId} twice`);
      idIndex = i;
      idIsRest = level === '{deviceId#}';
      if (idIsRest && !last) throw new Error(`pattern "${pattern}": {deviceId#} must be the last level`);
    } else if (level === '#') {
      if (!last) throw new Error(`pattern "${pattern}": # must be the last level`);
    } else if (level.includes('+') && level !== '+') {
      throw new Error(`pattern "${pattern}": + must fill a whole level`);
    } else if (level.includes('{') || level.includes('}') || level.includes('#')) {
      throw new Error(`pattern "${pattern}": unknown placeholder in level "${level}"`);
    }
  });
  if (idIndex === -1) throw new Error(`pattern "${pattern}" has no {deviceId} level`);
  const filter = levels
    .map((l) => (l === '{deviceId}' ? '+' : l === '{deviceId#}' ? '#' : l))
    .join('/');
  const hasRest = levels[levels.length - 1] === '#';
  // A trailing `#` matches the level before it too, as in MQTT [MQTT-4.7.1-2]: `a/#` matches `a`.
  const minLevels = hasRest ? levels.length - 1 : levels.length;
  return {
    pattern,
    kind,
    filter,
    match(topic: string) {
      const parts = topic.split('/');
      if (idIsRest ? parts.length <= idIndex : parts.length < minLevels) return undefined;
      for (let i = 0; i < levels.length; i++) {
        const level = levels[i];
        if (level === '#' || (i === idIndex && idIsRest)) break;
        if (i >= parts.length) return undefined;
        if (level !== '+' && i !== idIndex && level !== parts[i]) return undefined;
      }
      if (!hasRest && !idIsRest && parts.length !== levels.length) return undefined;
      const deviceId = idIsRest ? parts.slice(idIndex).join('/') : parts[idIndex];
      if (!deviceId || deviceId.length > 256) return undefined;
      return { deviceId };
    },
  };
}
