// Stopping at any moment: start-up waits (a broker that does not answer, a database that is not up
// yet) take an AbortSignal, and a process turns SIGINT/SIGTERM into one. A service manager's stop
// must never wait for a start-up timeout.
import { FerryError } from '@ferry/protocol';

/** Why a wait ended early: FERRY_ERR_NOT_READY naming the wait and the abort's reason. */
export function abortReason(signal: AbortSignal, what: string): FerryError {
  const reason: unknown = signal.reason;
  const why = reason instanceof Error ? reason.message : typeof reason === 'string' ? reason : 'stopped';
  return new FerryError('FERRY_ERR_NOT_READY', `${what}: stopped before it finished (${why})`, { what });
}

/**
 * Settles like `wait`, or rejects as soon as `signal` aborts. The wait itself goes on (a promise
 * cannot be cancelled): the caller closes whatever it was waiting on. A late rejection of `wait`
 * is swallowed so it cannot become an unhandled rejection.
 */
export function abortable<T>(wait: Promise<T>, signal: AbortSignal | undefined, what: string): Promise<T> {
  if (!signal) return wait;
  if (signal.aborted) {
    wait.catch(() => undefined);
    return Promise.reject(abortReason(signal, what));
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(abortReason(signal, what));
    signal.addEventListener('abort', onAbort, { once: true });
    wait.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}

export type StopSignal = 'SIGINT' | 'SIGTERM';

export interface StopSignals {
  /** Aborts at the first SIGINT or SIGTERM; its reason names the signal. */
  readonly signal: AbortSignal;
  /** Resolves with the first signal's name. */
  readonly received: Promise<StopSignal>;
  /** Removes the process listeners. */
  dispose(): void;
}

/**
 * Listens for SIGINT and SIGTERM: the first aborts `signal` (a clean stop), a second calls
 * `onSecond` (the caller exits at once). Installed listeners replace Node's default of dying.
 */
export function listenForStopSignals(onSecond: (signal: StopSignal) => void, target: Pick<NodeJS.Process, 'on' | 'off'> = process): StopSignals {
  const controller = new AbortController();
  let resolveReceived!: (signal: StopSignal) => void;
  const received = new Promise<StopSignal>((resolve) => {
    resolveReceived = resolve;
  });
  const handler = (signal: StopSignal): void => {
    if (controller.signal.aborted) {
      onSecond(signal);
      return;
    }
    controller.abort(new Error(`${signal} received`));
    resolveReceived(signal);
  };
  target.on('SIGINT', handler);
  target.on('SIGTERM', handler);
  return {
    signal: controller.signal,
    received,
    dispose() {
      target.off('SIGINT', handler);
      target.off('SIGTERM', handler);
    },
  };
}
