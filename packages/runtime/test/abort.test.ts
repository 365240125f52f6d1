import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { abortable, listenForStopSignals } from '../src/abort.js';

describe('abortable waits', () => {
  it('settles like the wait when nothing aborts it', async () => {
    const controller = new AbortController();
    await expect(abortable(Promise.resolve(7), controller.signal, 'a wait')).resolves.toBe(7);
    await expect(abortable(Promise.reject(new Error('refused')), controller.signal, 'a wait')).rejects.toThrow('refused');
  });

  it('rejects with FERRY_ERR_NOT_READY naming the wait and the reason as soon as the signal aborts', async () => {
    const controller = new AbortController();
    let fail!: (err: Error) => void;
    const never = new Promise<number>((_resolve, reject) => {
      fail = reject;
    });
    const waiting = abortable(never, controller.signal, 'waiting for the broker');
    controller.abort(new Error('SIGTERM received'));
    await expect(waiting).rejects.toThrow('FERRY_ERR_NOT_READY: waiting for the broker: stopped before it finished (SIGTERM received)');
    // The abandoned wait failing later is not an unhandled rejection.
    fail(new Error('late'));
    await expect(abortable(Promise.resolve(1), controller.signal, 'already stopped')).rejects.toThrow(/already stopped/);
  });
});

describe('stop signals', () => {
  it('aborts on the first SIGTERM or SIGINT and hands the second to onSecond', async () => {
    const target = new EventEmitter();
    const seconds: string[] = [];
    const stop = listenForStopSignals((s) => seconds.push(s), target as unknown as Pick<NodeJS.Process, 'on' | 'off'>);
    expect(stop.signal.aborted).toBe(false);
    target.emit('SIGTERM', 'SIGTERM');
    expect(stop.signal.aborted).toBe(true);
    await expect(stop.received).resolves.toBe('SIGTERM');
    target.emit('SIGINT', 'SIGINT');
    expect(seconds).toEqual(['SIGINT']);
    stop.dispose();
    expect(target.listenerCount('SIGTERM') + target.listenerCount('SIGINT')).toBe(0);
  });
});
