// The message invariant's bookkeeping: every settled message counted once, per device and in
// total, with ignored ones by reason, and a flood of device ids bounded.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MESSAGE_OUTCOMES, MessageAccounting, NO_DEVICE, OTHER_DEVICES } from '../src/message-accounting.js';
import type { MessageOutcome } from '../src/message-accounting.js';

function recorder(): { sink: { settled(o: MessageOutcome): void; ignored(r: string): void }; settled: MessageOutcome[]; ignored: string[] } {
  const settled: MessageOutcome[] = [];
  const ignored: string[] = [];
  return { sink: { settled: (o) => settled.push(o), ignored: (r) => ignored.push(r) }, settled, ignored };
}

describe('MessageAccounting', () => {
  it('keeps received = stored + dead_lettered + ignored + deferred per device and in total, whatever the sequence', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.option(fc.constantFrom('a', 'b', 'c'), { nil: undefined }), fc.constantFrom(...MESSAGE_OUTCOMES), fc.constantFrom('ha-discovery', 'announce'))), (events) => {
        const { sink, settled } = recorder();
        const accounting = new MessageAccounting(sink);
        for (const [device, outcome, reason] of events) accounting.settle(device, outcome, reason);
        const sum = (c: { stored: number; dead_lettered: number; ignored: number; deferred: number }) => c.stored + c.dead_lettered + c.ignored + c.deferred;
        expect(accounting.totals().received).toBe(events.length);
        expect(sum(accounting.totals())).toBe(events.length);
        for (const [, counts] of accounting.devices()) expect(sum(counts)).toBe(counts.received);
        expect([...accounting.devices().values()].reduce((n, c) => n + c.received, 0)).toBe(events.length);
        expect(settled).toHaveLength(events.length);
      }),
    );
  });

  it('counts ignored messages by the rule that ignored them, and a message without a device under its own key', () => {
    const { sink, ignored } = recorder();
    const accounting = new MessageAccounting(sink);
    accounting.settle('plug-1', 'ignored', 'home assistant discovery');
    accounting.settle('plug-1', 'ignored', 'home assistant discovery');
    accounting.settle(undefined, 'dead_lettered');
    expect(accounting.device('plug-1')?.ignoredBy).toEqual({ 'home assistant discovery': 2 });
    expect(accounting.device(NO_DEVICE)?.dead_lettered).toBe(1);
    expect(ignored).toEqual(['home assistant discovery', 'home assistant discovery']);
  });

  it('sums devices beyond its bound under one key instead of growing', () => {
    const accounting = new MessageAccounting(recorder().sink, 3);
    for (const id of ['a', 'b', 'c', 'd', 'e', 'a']) accounting.settle(id, 'stored');
    expect([...accounting.devices().keys()]).toEqual(['a', 'b', 'c', OTHER_DEVICES]);
    expect(accounting.device(OTHER_DEVICES)?.stored).toBe(2);
    expect(accounting.device('a')?.stored).toBe(2);
  });
});
