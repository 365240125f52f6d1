// Stage 5's encoding: the batch envelope built from the readings' stored JSON, with no parse and no
// re-stringify. The bytes are those of @ferry/protocol's encodeBatch for the same readings (the
// test holds that for both compressions), so the wire has one definition and the gateway
// only splices what it wrote itself.
import { gzipSync } from 'node:zlib';
import type { BatchHeader, Compression } from '@ferry/protocol';

/** A stored reading: its seq, and its JSON without the seq (as the outbox keeps it). */
export interface EncodedReading {
  readonly seq: number;
  readonly json: string;
}

/** `{"seq":<seq>,...stored}`: the key order encodeBatch gives `{ seq, ...reading }`. */
function withSeq(reading: EncodedReading): string {
  const { seq, json } = reading;
  return json.length > 2 ? `{"seq":${seq},${json.slice(1)}` : `{"seq":${seq}}`;
}

/** The JSON array of readings that an envelope carries (or gzips). */
function readingsArray(readings: readonly EncodedReading[]): string {
  const parts = new Array<string>(readings.length);
  for (let i = 0; i < readings.length; i += 1) parts[i] = withSeq(readings[i]!);
  return `[${parts.join(',')}]`;
}

/** The envelope `encodeBatch(header, readings, compression)` would give for the parsed readings. */
export function encodeStoredBatch(header: BatchHeader, readings: readonly EncodedReading[], compression: Compression): Buffer {
  const array = readingsArray(readings);
  if (compression === 'gzip') {
    const data = gzipSync(array).toString('base64');
    return Buffer.from(JSON.stringify({ ...header, compression, data }));
  }
  // The header as encodeBatch writes it, with an empty list whose brackets are then filled.
  const empty = JSON.stringify({ ...header, compression, readings: [] });
  return Buffer.from(`${empty.slice(0, -3)}${array}}`);
}
