// Ferry's native JSON (`{ts, seq, metrics, tags}` or a flat object): the protocol's own decoder.
import { decodeDevicePayload } from '@ferry/protocol';
import { guarded } from '../decoder.js';
import type { Decoder } from '../decoder.js';

export function createFerryDecoder(): Decoder {
  return guarded('ferry', ({ payload, match, receivedAt, limits, options }) => {
    const result = decodeDevicePayload({ payload, kind: options.kind ?? 'telemetry', deviceId: match.deviceId, receivedAt, limits });
    if (result.ok) return { readings: [result.reading], dropped: result.dropped, deviceId: match.deviceId };
    return { readings: [], dropped: [], rejection: result.rejection, deviceId: match.deviceId };
  });
}
