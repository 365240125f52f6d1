// The decoders a gateway (or ingestor) uses, one per configured pattern: the first pattern that
// matches a topic decodes it. State of stateful formats lives here, so each gateway has its own.
import { compilePattern, defaultLimits, topicProblem } from '@ferry/protocol';
import type { CompiledPattern, DeviceReading, Limits } from '@ferry/protocol';
import { compileIgnoreFilter, formatConfigSchema, namesDevice } from './config.js';
import type { FormatConfig, FormatConfigInput, FormatName } from './config.js';
import { ignored } from './decoder.js';
import type { Decoder, DecodeOutcome, DecoderOptions, TopicMatch } from './decoder.js';
import { createEsphomeDecoder } from './formats/esphome.js';
import { createFerryDecoder } from './formats/ferry.js';
import { createFlatDecoder } from './formats/flat.js';
import { createHomeAssistantDecoder } from './formats/homeassistant.js';
import { createInfluxLineDecoder } from './formats/influx-line.js';
import { createOmgBleDecoder } from './formats/omg-ble.js';
import { createShellyGen1Decoder } from './formats/shelly-gen1.js';
import { createShellyGen2Decoder } from './formats/shelly-gen2.js';
import { createSparkplugDecoder } from './formats/sparkplug-b.js';
import { createScalarDecoder } from './formats/scalar.js';
import { createTasmotaDecoder } from './formats/tasmota.js';
import { createThingsboardDecoder } from './formats/thingsboard.js';
import { createTtnV3Decoder } from './formats/ttn-v3.js';

const FACTORIES: Record<FormatName, () => Decoder> = {
  ferry: createFerryDecoder,
  flat: createFlatDecoder,
  tasmota: createTasmotaDecoder,
  'shelly-gen1': createShellyGen1Decoder,
  'shelly-gen2': () => createShellyGen2Decoder(),
  esphome: createEsphomeDecoder,
  homeassistant: createHomeAssistantDecoder,
  'omg-ble': createOmgBleDecoder,
  'influx-line': createInfluxLineDecoder,
  'ttn-v3': createTtnV3Decoder,
  'sparkplug-b': () => createSparkplugDecoder(),
  thingsboard: createThingsboardDecoder,
  scalar: createScalarDecoder,
};

/**
 * Availability (online/offline, Last Will, Sparkplug BIRTH/DEATH) is dated at its arrival, never
 * by a time in its payload: a Will carries the time its session began, so by that time the offline
 * it reports would sit before the same session's online (in the database and in health order).
 */
export function datedAtArrival(outcome: DecodeOutcome, receivedAt: number): DecodeOutcome {
  if (!hasStatusToDate(outcome.readings, receivedAt)) return outcome;
  return { ...outcome, readings: outcome.readings.map((r) => (r.kind === 'status' ? { ...r, ts: receivedAt, tsSource: 'gateway' as const } : r)) };
}

/** Whether a status reading is not yet dated at its arrival (a loop: this runs per message). */
function hasStatusToDate(readings: readonly DeviceReading[], receivedAt: number): boolean {
  for (let i = 0; i < readings.length; i += 1) {
    const r = readings[i]!;
    if (r.kind === 'status' && (r.ts !== receivedAt || r.tsSource !== 'gateway')) return true;
  }
  return false;
}

/**
 * A decoder's outcome with the pattern that routed it. The usual outcome (readings, no rejection,
 * not ignored) is built as one literal: spreading it cost more per message than the decoding
 * around it. Others keep every key the decoder set.
 */
function routedOutcome(outcome: DecodeOutcome, deviceId: string, config: FormatConfig): DecoderSetOutcome {
  if (outcome.rejection === undefined && outcome.ignored === undefined) {
    return { readings: outcome.readings, dropped: outcome.dropped, deviceId, pattern: config.pattern, format: config.format };
  }
  return { ...outcome, deviceId, pattern: config.pattern, format: config.format };
}

/** A fresh decoder for a format; stateful formats start with empty state. */
export function createDecoder(format: FormatName): Decoder {
  return FACTORIES[format]();
}

export interface DecoderSetEntry {
  readonly config: FormatConfig;
  /** For an ignore pattern that names no device (`shellies/announce`), `match` answers an empty device id. */
  readonly compiled: CompiledPattern;
  readonly decoder: Decoder;
}

export type DecoderSetOutcome = DecodeOutcome & { readonly pattern?: string; readonly format?: FormatName };

export interface DecoderSet {
  readonly entries: readonly DecoderSetEntry[];
  /** MQTT subscription filters for all patterns. */
  readonly filters: readonly string[];
  decode(topic: string, payload: Uint8Array, receivedAt: number, limits?: Limits): DecoderSetOutcome;
  /**
   * The first matching pattern's device id and the key that routes the topic's device
   * (Decoder.routingKey), or undefined. An ignore pattern that names no device gives no device id
   * (nothing to authorize) and routes by the topic.
   */
  route(topic: string): { readonly deviceId?: string; readonly routingKey: string } | undefined;
}

/** The topic levels after `{deviceId}` (at `idLevel`); `{deviceId#}` (-1) takes them into the id itself. */
function tailOf(idLevel: number, topic: string): readonly string[] {
  return idLevel === -1 ? NO_TAIL : Object.freeze(topic.split('/').slice(idLevel + 1));
}

const NO_TAIL: readonly string[] = Object.freeze([]);

/**
 * Topics whose route is remembered, at most: a device publishes on the same few topics again and
 * again, and matching the patterns and splitting the topic for each message cost more than the
 * lookup. The oldest remembered topic goes first once the bound is reached.
 */
export const ROUTE_CACHE_TOPICS = 4096;

/** A topic's first matching entry, as decode and route use it. */
interface Route {
  readonly entry: DecoderSetEntry;
  readonly options: DecoderOptions;
  /** The device id the pattern found; '' for an ignore pattern that names none. */
  readonly match: TopicMatch;
}

/** An ignore pattern without `{deviceId}` as a CompiledPattern: a plain MQTT filter. */
function compileEntryPattern(config: FormatConfig): CompiledPattern {
  if (config.action !== 'ignore' || namesDevice(config.pattern)) return compilePattern(config.pattern, config.kind);
  const filter = compileIgnoreFilter(config.pattern);
  return { pattern: config.pattern, kind: config.kind, filter: filter.filter, match: (topic) => (filter.match(topic) ? { deviceId: '' } : undefined) };
}

/**
 * Builds the decoders for a list of pattern entries (validated with formatConfigSchema; throws a
 * zod error on a bad entry, which config loading reports as FERRY_ERR_CONFIG_INVALID). Patterns
 * of one format share one decoder, and so its state.
 */
export function createDecoderSet(patterns: readonly FormatConfigInput[]): DecoderSet {
  const decoders = new Map<FormatName, Decoder>();
  const entries: DecoderSetEntry[] = patterns.map((input) => {
    const config = formatConfigSchema.parse(input);
    let decoder = decoders.get(config.format);
    if (!decoder) {
      decoder = createDecoder(config.format);
      decoders.set(config.format, decoder);
    }
    return { config, compiled: compileEntryPattern(config), decoder };
  });
  const prepared = entries.map((entry) => ({
    entry,
    idLevel: entry.config.pattern.split('/').indexOf('{deviceId}'),
    options: {
      kind: entry.config.kind,
      coerce: entry.config.coerce ?? {},
      timestampUnit: entry.config.timestampUnit,
      deviceIdField: entry.config.deviceIdField,
      scalar: entry.config.scalar,
    } satisfies DecoderOptions,
  }));
  const routes = new Map<string, Route>();

  function find(topic: string): Route | undefined {
    for (const { entry, idLevel, options } of prepared) {
      const match = entry.compiled.match(topic);
      if (!match) continue;
      // An ignore pattern's decoder never runs: its tail is never read.
      const tail = entry.config.action === 'ignore' ? NO_TAIL : tailOf(idLevel, topic);
      return { entry, options, match: Object.freeze({ deviceId: match.deviceId, tail }) };
    }
    return undefined;
  }

  /** The route of a topic topicProblem passed; remembered. */
  function remember(topic: string, route: Route): void {
    if (routes.size >= ROUTE_CACHE_TOPICS) {
      const oldest = routes.keys().next();
      if (!oldest.done) routes.delete(oldest.value);
    }
    routes.set(topic, route);
  }

  /** The first matching entry for a topic, or why there is none: a bad topic, or no pattern. */
  function routeOf(topic: string): Route | string | undefined {
    const known = routes.get(topic);
    if (known) return known;
    const badTopic = topicProblem(topic);
    if (badTopic) return badTopic;
    const found = find(topic);
    if (found) remember(topic, found);
    return found;
  }

  return {
    entries,
    // An ignore pattern only shadows later patterns: subscribing to a topic just to drop it is wasted traffic.
    filters: entries.filter((e) => e.config.action !== 'ignore').map((e) => e.compiled.filter),
    route(topic) {
      // A bad topic is routed by the patterns all the same (decode refuses it); it is not remembered.
      const known = routeOf(topic);
      const route = typeof known === 'string' ? find(topic) : known;
      if (!route) return undefined;
      const { entry, match } = route;
      if (entry.config.action === 'ignore') return match.deviceId === '' ? { routingKey: topic } : { deviceId: match.deviceId, routingKey: match.deviceId };
      const routingKey = entry.decoder.routingKey?.(topic, match);
      return { deviceId: match.deviceId, routingKey: routingKey ?? match.deviceId };
    },
    decode(topic, payload, receivedAt, limits = defaultLimits) {
      const route = routeOf(topic);
      if (typeof route === 'string') return { readings: [], dropped: [], rejection: { code: 'FERRY_ERR_PAYLOAD_ENCODING', reason: route } };
      if (route) {
        const { entry, match } = route;
        if (entry.config.action === 'ignore') {
          return { ...ignored(entry.config.reason ?? entry.config.pattern, match.deviceId === '' ? undefined : match.deviceId), pattern: entry.config.pattern };
        }
        const outcome = entry.decoder.decode({ topic, payload, match, receivedAt, limits, options: route.options });
        return routedOutcome(datedAtArrival(outcome, receivedAt), outcome.deviceId ?? match.deviceId, entry.config);
      }
      return {
        readings: [],
        dropped: [],
        rejection: {
          code: 'FERRY_ERR_TOPIC_UNKNOWN',
          reason: `topic "${topic.slice(0, 200)}" matches none of ${entries.map((e) => `"${e.config.pattern}"`).join(', ')}`,
        },
      };
    },
  };
}
