// The part of the InfluxDB v1 and v2 sinks that does not depend on the API: encode the batch,
// set aside points that cannot be written, send the rest with bisection on refusal, and let
// close() wait for writes and presence checks in flight.
import { FerryError, isFerryError } from '@ferry/protocol';
import type { Logger } from '@ferry/runtime';
import type { Point, Sink, SinkWriteResult } from './sink.js';
import type { Presence } from './presence.js';
import { encodeBody } from './line-protocol.js';
import { writeBody, type SendBody } from './bisect.js';

export interface HttpSinkParts {
  readonly description: string;
  readonly send: SendBody;
  readonly ping: () => Promise<boolean>;
  /** Which points the database holds already (presence.ts). */
  readonly presence: Presence;
  readonly logger?: Logger | undefined;
}

export function createHttpSink(parts: HttpSinkParts): Sink {
  const { description, send, logger } = parts;
  const inFlight = new Set<Promise<unknown>>();
  let closed = false;

  async function write(points: readonly Point[]): Promise<SinkWriteResult> {
    if (closed) throw new FerryError('FERRY_ERR_NOT_READY', `${description}: sink is closed`, { sink: description });
    const batch = encodeBody(points);
    const sent = await writeBody(batch, send, {
      onSplit: (size, reason) => logger?.warn({ sink: description, size, reason }, 'database refused a batch; splitting it to find the refused points'),
    });
    const rejected = [...batch.rejected, ...sent.rejected].sort((a, b) => a.index - b.index);
    return { written: sent.written, rejected };
  }

  function tracked<T>(pending: Promise<T>): Promise<T> {
    inFlight.add(pending);
    const forget = (): void => {
      inFlight.delete(pending);
    };
    pending.then(forget, (err: unknown) => {
      forget();
      // The database failed: it may come back as another server (identify it again).
      if (isFerryError(err, 'FERRY_ERR_SINK_UNAVAILABLE')) parts.presence.forget();
    });
    return pending;
  }

  return {
    description,
    write(points) {
      return tracked(write(points));
    },
    present(points) {
      if (closed) return Promise.reject(new FerryError('FERRY_ERR_NOT_READY', `${description}: sink is closed`, { sink: description }));
      return tracked(parts.presence.present(points));
    },
    async ping() {
      if (closed) return false;
      try {
        return await parts.ping();
      } catch {
        return false;
      }
    },
    async close() {
      closed = true;
      await Promise.allSettled([...inFlight]);
    },
  };
}
