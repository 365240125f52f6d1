// `ferry deadletter`: inspect, replay and purge what Ferry refused. Through the ingestor's ops
// API (--ingestor), which also holds what gateways refused and reported (origin gateway, replayed
// by their gateway), or straight from a data dir's deadletters.db (--data-dir), which works while
// the process is stopped.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Command } from 'commander';
import { errorCodes, FerryError } from '@ferry/protocol';
import type { ErrorCode } from '@ferry/protocol';
import { createSqliteDeadLetterStore, presentDeadLetter } from '@ferry/deadletter';
import type { DeadLetterFilter, DeadLetterStore } from '@ferry/deadletter';
import { toCount } from '../flags.js';
import { callIngestor, ingestorUrl, INGESTOR_URL_ENV } from '../ops-client.js';
import { describeError, EXIT_FAILED, EXIT_OK, exitCodeFor, writeErr, writeOut } from '../service.js';

interface SourceFlags {
  ingestor?: string;
  dataDir?: string;
}

interface FilterFlags {
  code?: string;
  device?: string;
  gateway?: string;
  origin?: string;
  includeReplayed?: boolean;
}

/** A dead letter as the ops API presents it. */
export interface PresentedDeadLetter {
  readonly id: number;
  readonly at: number;
  readonly code: string;
  readonly reason: string;
  readonly source: { gatewayId?: string; deviceId?: string; topic?: string; seq?: number; gatewayLetterId?: number };
  readonly issues?: readonly unknown[];
  readonly replayedAt: number | null;
  /** Absent from ingestors before gateway reporting. */
  readonly origin?: 'gateway' | 'local';
  readonly payloadEncoding: 'utf8' | 'base64';
  readonly payload: string;
  readonly payloadTruncated?: boolean;
  readonly payloadBytes?: number;
}

/** The latest dead-letter counts a gateway reported to the ingestor. */
interface ReportedCounts {
  readonly held: number;
  readonly discarded: number;
  readonly reportedAt: number;
}

function checkOrigin(origin: string | undefined): 'gateway' | 'local' | undefined {
  if (origin === undefined || origin === 'gateway' || origin === 'local') return origin;
  throw new FerryError('FERRY_ERR_CONFIG_INVALID', `origin: "${origin}" is not gateway or local`, { fields: ['origin'] });
}


function checkCode(code: string | undefined): ErrorCode | undefined {
  if (code === undefined) return undefined;
  if (!(errorCodes as string[]).includes(code)) {
    throw new FerryError('FERRY_ERR_CONFIG_INVALID', `code: "${code}" is not a Ferry error code; expected one of ${errorCodes.join(', ')}`, {
      fields: ['code'],
    });
  }
  return code as ErrorCode;
}

function storeFilter(flags: FilterFlags, limit?: number): DeadLetterFilter {
  const code = checkCode(flags.code);
  const origin = checkOrigin(flags.origin);
  return {
    ...(origin !== undefined ? { origin } : {}),
    ...(code !== undefined ? { code } : {}),
    ...(flags.device !== undefined ? { deviceId: flags.device } : {}),
    ...(flags.gateway !== undefined ? { gatewayId: flags.gateway } : {}),
    ...(flags.includeReplayed ? { includeReplayed: true } : {}),
    ...(limit !== undefined ? { limit } : {}),
  };
}

function query(filter: DeadLetterFilter): string {
  const params = new URLSearchParams();
  if (filter.code) params.set('code', filter.code);
  if (filter.deviceId !== undefined) params.set('deviceId', filter.deviceId);
  if (filter.gatewayId !== undefined) params.set('gatewayId', filter.gatewayId);
  if (filter.origin !== undefined) params.set('origin', filter.origin);
  if (filter.includeReplayed) params.set('includeReplayed', 'true');
  if (filter.limit !== undefined) params.set('limit', String(filter.limit));
  const text = params.toString();
  return text ? `?${text}` : '';
}

type Source = { kind: 'http'; base: string } | { kind: 'store'; path: string };

function chooseSource(flags: SourceFlags): Source {
  if (flags.dataDir !== undefined && flags.ingestor !== undefined) {
    throw new FerryError('FERRY_ERR_CONFIG_INVALID', 'data-dir: give either --data-dir or --ingestor, not both', { fields: ['data-dir', 'ingestor'] });
  }
  if (flags.dataDir !== undefined) {
    const path = join(flags.dataDir, 'deadletters.db');
    if (!existsSync(path)) {
      throw new FerryError('FERRY_ERR_CONFIG_INVALID', `data-dir: no dead-letter store at ${path}`, { fields: ['data-dir'] });
    }
    return { kind: 'store', path };
  }
  return { kind: 'http', base: ingestorUrl(flags.ingestor) };
}

function withStore<T>(path: string, use: (store: DeadLetterStore) => T): T {
  const store = createSqliteDeadLetterStore({ path });
  try {
    return use(store);
  } finally {
    store.close();
  }
}

function summaryLine(e: PresentedDeadLetter): string {
  const where = [e.source.gatewayId, e.source.deviceId].filter((s) => s !== undefined).join('/') || e.source.topic || '-';
  // A letter a gateway refused and reported: its id there, for `ferry deadletter show --data-dir` on the gateway.
  const origin = e.source.gatewayLetterId !== undefined ? `(at gateway ${e.source.gatewayId ?? '?'}, its #${e.source.gatewayLetterId})` : '';
  return [String(e.id).padStart(6), new Date(e.at).toISOString(), e.code.padEnd(28), where, origin, e.replayedAt !== null ? '(replayed)' : '', e.reason]
    .filter((s) => s !== '')
    .join('  ');
}

async function guarded(work: () => Promise<number>): Promise<number> {
  try {
    return await work();
  } catch (err) {
    writeErr(describeError(err));
    return exitCodeFor(err);
  }
}

function parseId(text: string): number {
  const id = Number(text);
  if (!Number.isSafeInteger(id) || id <= 0) {
    throw new FerryError('FERRY_ERR_CONFIG_INVALID', `id: "${text}" is not a dead-letter id (a positive whole number)`, { fields: ['id'] });
  }
  return id;
}

interface ListFlags extends SourceFlags, FilterFlags {
  limit?: number;
  json?: boolean;
}

async function list(flags: ListFlags): Promise<number> {
  const filter = storeFilter(flags, flags.limit ?? 100);
  const source = chooseSource(flags);
  let entries: PresentedDeadLetter[];
  let counts: unknown;
  let gateways: Record<string, ReportedCounts> | undefined;
  if (source.kind === 'store') {
    [entries, counts] = withStore(source.path, (store) => [store.list(filter).map(presentDeadLetter), store.counts()]);
  } else {
    const answer = await callIngestor(source.base, 'GET', `/api/deadletters${query(filter)}`);
    if (answer.status !== 200) throw new Error(`the ingestor answered ${answer.status}: ${JSON.stringify(answer.body)}`);
    ({ entries, counts, gateways } = answer.body as { entries: PresentedDeadLetter[]; counts: unknown; gateways?: Record<string, ReportedCounts> });
  }
  if (flags.json) {
    writeOut(JSON.stringify({ entries, counts, ...(gateways !== undefined ? { gateways } : {}) }));
    return EXIT_OK;
  }
  if (entries.length === 0) writeOut('no dead letters match');
  else for (const e of entries) writeOut(summaryLine(e));
  // What each gateway said it holds: letters its bound discarded before a report show only here.
  for (const [id, c] of Object.entries(gateways ?? {})) {
    if (flags.gateway !== undefined && flags.gateway !== id) continue;
    writeOut(`gateway ${id} holds ${c.held} dead letters, its bound discarded ${c.discarded} (reported ${new Date(c.reportedAt).toISOString()})`);
  }
  return EXIT_OK;
}

async function show(idText: string, flags: SourceFlags): Promise<number> {
  const id = parseId(idText);
  const source = chooseSource(flags);
  let entry: PresentedDeadLetter | undefined;
  if (source.kind === 'store') {
    entry = withStore(source.path, (store) => {
      const found = store.get(id);
      return found ? presentDeadLetter(found) : undefined;
    });
  } else {
    const answer = await callIngestor(source.base, 'GET', `/api/deadletters/${id}`);
    if (answer.status === 200) entry = answer.body as PresentedDeadLetter;
    else if (answer.status !== 404) throw new Error(`the ingestor answered ${answer.status}: ${JSON.stringify(answer.body)}`);
  }
  if (!entry) {
    writeErr(`dead letter ${id} not found`);
    return EXIT_FAILED;
  }
  writeOut(JSON.stringify(entry, null, 2));
  return EXIT_OK;
}

async function replay(ids: string[], flags: { ingestor?: string }): Promise<number> {
  const parsed = ids.map(parseId);
  const base = ingestorUrl(flags.ingestor);
  let code = EXIT_OK;
  for (const id of parsed) {
    const answer = await callIngestor(base, 'POST', `/api/deadletters/${id}/replay`);
    const body = (answer.body ?? {}) as { outcome?: string; reason?: string };
    writeOut(JSON.stringify({ id, status: answer.status, ...body }));
    // 202: the database has not confirmed yet; the write still lands, so it is not a failure.
    if (answer.status !== 200 && answer.status !== 202) code = EXIT_FAILED;
  }
  return code;
}

interface PurgeFlags extends SourceFlags, FilterFlags {
  all?: boolean;
}

async function purge(flags: PurgeFlags): Promise<number> {
  const filter = storeFilter(flags);
  if (!flags.all && Object.keys(filter).filter((k) => k !== 'includeReplayed').length === 0) {
    throw new FerryError('FERRY_ERR_CONFIG_INVALID', 'filter: name --code, --device or --gateway, or pass --all to purge every dead letter', {
      fields: ['code', 'device', 'gateway', 'all'],
    });
  }
  const source = chooseSource(flags);
  if (source.kind === 'store') {
    const removed = withStore(source.path, (store) => store.purge(filter));
    writeOut(JSON.stringify({ purged: removed }));
    return EXIT_OK;
  }
  const answer = await callIngestor(source.base, 'DELETE', `/api/deadletters${query(filter)}`);
  if (answer.status === 404 || answer.status === 405) {
    writeErr('this ingestor offers no purge over HTTP; run `ferry deadletter purge --data-dir <ingestor data dir>` instead');
    return EXIT_FAILED;
  }
  if (answer.status !== 200) throw new Error(`the ingestor answered ${answer.status}: ${JSON.stringify(answer.body)}`);
  writeOut(JSON.stringify(answer.body));
  return EXIT_OK;
}

function sourceOptions(cmd: Command): Command {
  return cmd
    .option('--ingestor <url>', `ingestor ops URL (or set ${INGESTOR_URL_ENV})`)
    .option('--data-dir <dir>', 'read the deadletters.db of a gateway or ingestor data dir instead');
}

function filterOptions(cmd: Command): Command {
  return cmd
    .option('--code <code>', 'only this error code, e.g. FERRY_ERR_PAYLOAD_SCHEMA')
    .option('--device <id>', 'only this device')
    .option('--gateway <id>', 'only this gateway')
    .option('--origin <where>', 'gateway: only letters gateways refused and reported; local: only those refused by this process')
    .option('--include-replayed', 'include entries already replayed');
}

export function deadletterCommand(): Command {
  const command = new Command('deadletter').description('inspect, replay and purge dead letters (what Ferry refused, with the reason)');
  command.addCommand(
    filterOptions(sourceOptions(new Command('list').description('list dead letters, newest last')))
      .option('--limit <n>', 'at most this many (default 100)', toCount)
      .option('--json', 'print one JSON object')
      .action(async (flags: ListFlags) => {
        process.exitCode = await guarded(() => list(flags));
      }),
  );
  command.addCommand(
    sourceOptions(new Command('show').description('show one dead letter with its payload and validation issues'))
      .argument('<id>', 'dead-letter id')
      .action(async (id: string, flags: SourceFlags) => {
        process.exitCode = await guarded(() => show(id, flags));
      }),
  );
  command.addCommand(
    new Command('replay')
      .description('send dead letters through the ingestor again (after fixing what refused them); a gateway\'s letter is replayed by its gateway')
      .argument('<ids...>', 'dead-letter ids')
      .option('--ingestor <url>', `ingestor ops URL (or set ${INGESTOR_URL_ENV})`)
      .action(async (ids: string[], flags: { ingestor?: string }) => {
        process.exitCode = await guarded(() => replay(ids, flags));
      }),
  );
  command.addCommand(
    filterOptions(sourceOptions(new Command('purge').description('delete dead letters matching a filter')))
      .option('--all', 'purge every dead letter (no filter)')
      .action(async (flags: PurgeFlags) => {
        process.exitCode = await guarded(() => purge(flags));
      }),
  );
  return command;
}
