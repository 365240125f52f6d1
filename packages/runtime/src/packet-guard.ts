// The MQTT packet size guard: refuses a packet by its fixed header, before its body arrives. The
// broker and the gateway's device listener put it in front of every connection.
//
// Why: the MQTT parser buffers a packet until all of its announced remaining length is in, and
// maxPayloadBytes is checked only on the whole PUBLISH. A client announcing a 256 MB packet (the
// most a remaining length can say) and trickling bytes would make the broker hold them all. The
// guard reads the remaining length as soon as its bytes arrive and closes the connection when it
// is beyond the bound, as Mosquitto's max_packet_size does.
import type { Duplex } from 'node:stream';

/**
 * The largest packet a client may send: the payload bound plus what a PUBLISH adds (topic up to
 * 65,535 bytes with its length, a packet id), and at least a CONNECT with every field at its
 * 65,535-byte maximum (client id, will topic, will payload, username, password).
 */
export function maxPacketBytes(maxPayloadBytes: number): number {
  const FIELD = 2 + 65_535;
  return Math.max(maxPayloadBytes + FIELD + 2, 5 * FIELD + 10);
}

/** Next byte is a packet's first (type and flags). */
const TYPE = 0;
/** Reading the remaining-length varint. */
const LENGTH = 1;
/** Inside a body: skipping `remaining` bytes. */
const BODY = 2;

/** Pure: follows packet boundaries across chunks and reports the first remaining length over the bound. */
export class PacketSizeScanner {
  #state: number = TYPE;
  #length = 0;
  #multiplier = 1;
  #lengthBytes = 0;
  #remaining = 0;

  constructor(readonly maxRemaining: number) {}

  /** Feeds the next bytes of the stream; returns the offending remaining length, or undefined while all is within bounds. */
  feed(chunk: Uint8Array): number | undefined {
    let i = 0;
    while (i < chunk.length) {
      switch (this.#state) {
        case TYPE:
          i++;
          this.#state = LENGTH;
          this.#length = 0;
          this.#multiplier = 1;
          this.#lengthBytes = 0;
          break;
        case LENGTH: {
          const byte = chunk[i++]!;
          this.#length += (byte & 0x7f) * this.#multiplier;
          this.#multiplier *= 128;
          this.#lengthBytes++;
          if (this.#length > this.maxRemaining) return this.#length;
          if ((byte & 0x80) !== 0) {
            // A fifth length byte is malformed; the MQTT parser refuses it, so stop following.
            if (this.#lengthBytes === 4) return undefined;
            break;
          }
          this.#remaining = this.#length;
          this.#state = this.#remaining === 0 ? TYPE : BODY;
          break;
        }
        case BODY: {
          const skip = Math.min(this.#remaining, chunk.length - i);
          i += skip;
          this.#remaining -= skip;
          if (this.#remaining === 0) this.#state = TYPE;
          break;
        }
      }
    }
    return undefined;
  }
}

/**
 * Puts the scanner in front of a connection's reads. aedes takes its bytes with `read()` on
 * 'readable', so the guard wraps that method on this one stream: every byte still flows straight
 * from the socket to aedes, with no extra stream in between. `tooLarge` runs once, then the
 * connection is destroyed.
 */
export function guardPacketSize(stream: Duplex, maxRemaining: number, tooLarge: (announced: number) => void): void {
  const scanner = new PacketSizeScanner(maxRemaining);
  const read = stream.read.bind(stream);
  stream.read = (size?: number): unknown => {
    const chunk: unknown = read(size);
    if (chunk instanceof Uint8Array && !stream.destroyed) {
      const announced = scanner.feed(chunk);
      if (announced !== undefined) {
        tooLarge(announced);
        stream.destroy();
        return null;
      }
    }
    return chunk;
  };
}

/** `address:port` of the peer on an MQTT connection's stream, for log lines; undefined when unknown. */
export function connectionPeer(conn: unknown): string | undefined {
  const socket = conn as { remoteAddress?: string; remotePort?: number } | undefined;
  return socket?.remoteAddress !== undefined ? `${socket.remoteAddress}:${socket.remotePort ?? ''}` : undefined;
}
