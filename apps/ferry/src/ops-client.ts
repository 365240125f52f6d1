// A small client of the ingestor's ops API, for `ferry status` and `ferry deadletter`.
import { FerryError } from '@ferry/protocol';

export const INGESTOR_URL_ENV = 'FERRY_INGESTOR_URL';

/** The ingestor's HTTP URL from the flag or FERRY_INGESTOR_URL; FERRY_ERR_CONFIG_INVALID when neither is set. */
export function ingestorUrl(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  const raw = flag ?? env[INGESTOR_URL_ENV];
  if (raw === undefined || raw === '') {
    throw new FerryError('FERRY_ERR_CONFIG_INVALID', `ingestor: pass --ingestor <http url> or set ${INGESTOR_URL_ENV}`, { fields: ['ingestor'] });
  }
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new FerryError('FERRY_ERR_CONFIG_INVALID', `ingestor: "${raw}" is not a URL; expected e.g. http://127.0.0.1:9400`, { fields: ['ingestor'] });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new FerryError('FERRY_ERR_CONFIG_INVALID', `ingestor: "${raw}" must be an http:// or https:// URL`, { fields: ['ingestor'] });
  }
  return raw.replace(/\/+$/, '');
}

export interface ApiAnswer {
  readonly status: number;
  readonly body: unknown;
}

/** Thrown when the ingestor cannot be reached at all. */
export class IngestorUnreachable extends Error {
  override readonly name = 'IngestorUnreachable';
}

const REQUEST_TIMEOUT_MS = 15_000;

export async function callIngestor(base: string, method: 'GET' | 'POST' | 'DELETE', path: string): Promise<ApiAnswer> {
  let response: Response;
  try {
    // FERRY_TOKEN: the ops API token (http.tokens), when the ingestor requires one.
    const token = process.env['FERRY_TOKEN'];
    response = await fetch(`${base}${path}`, { method, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS), ...(token ? { headers: { authorization: `Bearer ${token}` } } : {}) });
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    throw new IngestorUnreachable(`cannot reach the ingestor at ${base}: ${cause?.code ?? cause?.message ?? (err as Error).message}`);
  }
  const text = await response.text();
  let body: unknown = text;
  try {
    body = text === '' ? null : JSON.parse(text);
  } catch {
    // not JSON: keep the text, it is the best explanation there is
  }
  return { status: response.status, body };
}
