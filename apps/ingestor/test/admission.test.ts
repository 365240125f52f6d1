// Admission (cluster/admission.ts) over a lease gate in memory: who takes a gateway's batches, in
// which order, and when its lease goes.
import { describe, expect, it } from 'vitest';
import { silentLogger, systemClock } from '@ferry/runtime';
import { waitFor } from '@ferry/testkit';
import { createAdmission } from '../src/cluster/admission.js';
import type { AdmissionMode, LeaseGate } from '../src/cluster/admission.js';

/** Leases in memory: `others` are held by another ingestor. */
function gate(others: Set<string> = new Set()): LeaseGate & { readonly mine: Set<string>; released: string[] } {
  const mine = new Set<string>();
  const released: string[] = [];
  return {
    mine,
    released,
    acquire: async (source) => {
      if (others.has(source)) return false;
      mine.add(source);
      return true;
    },
    holds: (source) => mine.has(source),
    release: async (source) => {
      mine.delete(source);
      released.push(source);
    },
    held: () => [...mine].sort(),
  };
}

function rig(mode: AdmissionMode, options: { preferred?: boolean; others?: Set<string>; inFlight?: Map<string, number> } = {}) {
  const leases = gate(options.others);
  const accepted: string[] = [];
  const inFlight = options.inFlight ?? new Map<string, number>();
  const dropped: { why: string; n: number }[] = [];
  const admission = createAdmission({
    mode,
    leases,
    preferred: () => options.preferred ?? true,
    accept: (topic) => accepted.push(topic),
    inFlight: (g) => inFlight.get(g) ?? 0,
    onTaken: () => undefined,
    waitMs: 300,
    lingerMs: 10,
    clock: systemClock,
    logger: silentLogger(),
    onDrop: (why, n) => dropped.push({ why, n }),
  });
  return { admission, leases, accepted, dropped, inFlight };
}

describe('admission', () => {
  it('takes a free gateway and hands its batches over in arrival order', async () => {
    const { admission, accepted } = rig('leases');
    for (let i = 1; i <= 5; i++) admission.admit('gw', `t${i}`, Buffer.alloc(0));
    await waitFor(() => accepted.length === 5, { timeoutMs: 2_000, what: 'five batches' });
    expect(accepted).toEqual(['t1', 't2', 't3', 't4', 't5']);
  });

  it('leaves a gateway preferred elsewhere unread (mode leases)', async () => {
    const { admission, accepted, dropped } = rig('leases', { preferred: false });
    admission.admit('gw', 't1', Buffer.alloc(0));
    await waitFor(() => dropped.length === 1, { timeoutMs: 2_000, what: 'the drop' });
    expect(dropped).toEqual([{ why: 'not-preferred', n: 1 }]);
    expect(accepted).toEqual([]);
  });

  it('waits for a lease another ingestor holds, then gives the batches up (mode shared)', async () => {
    const { admission, accepted, dropped } = rig('shared', { others: new Set(['gw']) });
    admission.admit('gw', 't1', Buffer.alloc(0));
    admission.admit('gw', 't2', Buffer.alloc(0));
    expect(admission.waiting).toBe(2);
    await waitFor(() => dropped.length === 1, { timeoutMs: 3_000, what: 'the drop' });
    expect(dropped).toEqual([{ why: 'lease-busy', n: 2 }]);
    expect(accepted).toEqual([]);
    expect(admission.waiting).toBe(0);
  });

  it('keeps a preferred gateway while active, lets it go when inactive, but only once its batches are acked', async () => {
    const { admission, leases, inFlight } = rig('leases');
    admission.admit('gw-quiet', 't', Buffer.alloc(0));
    admission.admit('gw-busy', 't', Buffer.alloc(0));
    await waitFor(() => leases.mine.size === 2, { timeoutMs: 2_000, what: 'both leases' });
    inFlight.set('gw-busy', 1);
    admission.settled('gw-quiet');
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(leases.released).toEqual([]);
    // The broker connection went: quiet gateways go at once, a busy one once acked.
    admission.setActive(false);
    await waitFor(() => leases.released.includes('gw-quiet'), { timeoutMs: 2_000, what: 'the quiet gateway released' });
    expect(leases.mine.has('gw-busy')).toBe(true);
    inFlight.delete('gw-busy');
    admission.settled('gw-busy');
    await waitFor(() => leases.released.includes('gw-busy'), { timeoutMs: 2_000, what: 'the busy gateway released' });
  });

  it('lets a quiet gateway go after the linger (mode shared)', async () => {
    const { admission, leases } = rig('shared');
    admission.admit('gw', 't', Buffer.alloc(0));
    await waitFor(() => leases.mine.has('gw'), { timeoutMs: 2_000, what: 'the lease' });
    admission.settled('gw');
    await waitFor(() => leases.released.includes('gw'), { timeoutMs: 2_000, what: 'the release' });
  });
});
