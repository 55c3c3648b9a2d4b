/**
 * The chaos run's jobs: a seeded mix of sleeping and burning jobs, some failing on purpose and
 * retried, some at-most-once, some scheduled or expiring, a few poison. Each is numbered (`n`,
 * its idempotency key `chaos-<n>`): job ids can repeat after a promotion loses commits, numbers
 * cannot.
 */
import type { JobSpec } from '../worker/types.ts';

export const KINDS = ['sleep', 'burn', 'block', 'poison-result', 'poison-error'] as const;
export type Kind = (typeof KINDS)[number];

export interface ChaosPayload {
  readonly n: number;
  readonly kind: Kind;
  readonly ms: number;
  /** The first this many attempts throw after their work. */
  readonly failTimes: number;
}

/** How a job is meant to end, whatever the faults do. */
export type Design = 'succeed' | 'fail' | 'expire' | 'poison';

export interface PlannedJob {
  readonly spec: JobSpec;
  readonly design: Design;
}

export function parseChaosPayload(payload: unknown): ChaosPayload {
  const p = payload as Partial<ChaosPayload> | null;
  if (!p || typeof p.n !== 'number' || !KINDS.includes(p.kind as Kind) || typeof p.ms !== 'number') {
    throw new Error(`payload: expected {n, kind, ms, failTimes}, got ${JSON.stringify(payload)}`);
  }
  return { n: p.n, kind: p.kind as Kind, ms: p.ms, failTimes: p.failTimes ?? 0 };
}

/** A small seeded generator (mulberry32): the same seed gives the same mix. */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

export const keyOf = (n: number): string => `chaos-${n}`;

/** Job number `n` of the mix, enqueued at `now`. */
export function planJob(n: number, random: () => number, now: number): PlannedJob {
  const between = (lo: number, hi: number) => Math.round(lo + random() * (hi - lo));
  const base = { task: 'chaos', idempotencyKey: keyOf(n) };
  const payload = (kind: Kind, ms: number, failTimes = 0): ChaosPayload => ({ n, kind, ms, failTimes });
  const r = random();
  if (r < 0.5) return { spec: { ...base, payload: payload('sleep', between(20, 300)) }, design: 'succeed' };
  if (r < 0.68) return { spec: { ...base, payload: payload('burn', between(5, 40)) }, design: 'succeed' };
  if (r < 0.8) return { spec: { ...base, delivery: 'at_most_once', payload: payload('sleep', between(50, 400)) }, design: 'succeed' };
  if (r < 0.85) return { spec: { ...base, maxAttempts: 4, payload: payload('sleep', between(10, 100), between(1, 2)) }, design: 'succeed' };
  if (r < 0.86) return { spec: { ...base, maxAttempts: 3, payload: payload('sleep', between(10, 50), 5) }, design: 'fail' };
  if (r < 0.87) return { spec: { ...base, delivery: 'at_most_once', payload: payload('sleep', 20, 1) }, design: 'fail' };
  if (r < 0.92) return { spec: { ...base, runAfter: new Date(now + between(1_000, 20_000)), payload: payload('sleep', between(20, 200)) }, design: 'succeed' };
  if (r < 0.95) return { spec: { ...base, expiresAt: new Date(now + 120_000), payload: payload('sleep', between(20, 200)) }, design: 'succeed' };
  if (r < 0.97) {
    // Due one millisecond before it expires: it ends `expired`, or ran in that millisecond.
    return { spec: { ...base, runAfter: new Date(now + 2_000), expiresAt: new Date(now + 2_001), payload: payload('sleep', 10) }, design: 'expire' };
  }
  if (r < 0.995) return { spec: { ...base, priority: between(1, 9), payload: payload('sleep', between(20, 200)) }, design: 'succeed' };
  return { spec: { ...base, payload: payload(random() < 0.5 ? 'poison-result' : 'poison-error', 0) }, design: 'poison' };
}
