import { describe, expect, it } from 'vitest';
import { progressLine } from '../scripts/format.ts';
import { migLines } from '../scripts/mig.ts';
import { observation, renderView, withCounterRates } from '../scripts/view.ts';

const sample = observation(
  {
    at: new Date('2026-11-26T10:00:00Z'),
    counts: { queued: 123456, running: 64, succeeded: 9876543, failed: 12, expired: 3, cancelled: 1 },
    estimated: ['queued'],
    endedTotal: 9876559,
    oldestQueuedSeconds: 42.5,
    enqueuedLastMinute: 60000,
    finishedLastMinute: 54000,
    latency: { p50: 0.003, p95: 0.012, p99: 0.05, max: 0.2 },
    runTime: { p50: 0.1, p95: 2.5 },
    lastJobId: '10000000',
  },
  [
    { id: '17', host: 'pgq-dev-worker-a1b2-a-very-long-hostname', pid: 1, concurrency: 16, jobsInFlight: 16, cpu: 0.61, startedAt: new Date(), heartbeatAt: new Date() },
    { id: '18', host: 'pgq-dev-worker-c3d4', pid: 1, concurrency: 16, jobsInFlight: 3, cpu: null, startedAt: new Date(), heartbeatAt: new Date() },
  ],
);

describe('terminal view', () => {
  it.each([200, 80, 40, 12])('fits %i columns: lines are cut, never wrapped', (width) => {
    const lines = renderView(sample, width, ['an extra panel line that is longer than a narrow terminal']);
    expect(lines.length).toBe(7);
    for (const line of lines) {
      expect(line.length).toBeLessThanOrEqual(width);
      expect(line).not.toContain('\n');
    }
    if (width >= 200) expect(lines[0]).toBe('queued ~123,456  running 64  succeeded 9,876,543  failed 12  expired 3  cancelled 1');
    else expect(lines[0]!.endsWith('…')).toBe(true);
  });

  it.each([120, 40, 20, 8])('the progress bar fits %i columns', (width) => {
    const line = progressLine(4_500, 10_000, 2, width);
    expect(line.length).toBeLessThanOrEqual(width);
    expect(line).toContain(width >= 40 ? '45%  4,500/10,000  2,250/s' : '45%');
  });

  it('the instance group lines say why the group is missing', () => {
    expect(migLines({ name: 'g', region: 'r', targetSize: null, recommendedSize: null, instances: {}, cpuTarget: null, error: 'gcloud not found on PATH' })).toEqual([
      'instance group g (r): unavailable: gcloud not found on PATH',
    ]);
  });
});

describe('last-minute rates', () => {
  const at = (seconds: number, enqueued: number, ended: number) => ({
    ...sample,
    at: new Date(Date.parse('2026-11-26T10:00:00Z') + seconds * 1000).toISOString(),
    totals: { enqueued, ended },
  });

  it('come from the growth of the counters over the last minute, at any rate', () => {
    const earlier = [at(-70, 0, 0), at(-50, 1_000_000, 900_000), at(-1, 1_990_000, 1_890_000)];
    // 50 s at 20,000 jobs/s: far past what the snapshot counts exactly.
    expect(withCounterRates(at(0, 2_000_000, 1_900_000), earlier).rates).toEqual({ enqueuedPerSecond: 20_000, finishedPerSecond: 20_000 });
  });

  it("keep the snapshot's own figures without an earlier sample, or when a counter went back", () => {
    expect(withCounterRates(at(0, 10, 5), []).rates).toEqual(sample.rates);
    expect(withCounterRates(at(0, 10, 5), [at(-1, 0, 0)]).rates).toEqual(sample.rates);
    expect(withCounterRates(at(0, 10, 5), [at(-30, 100, 50)]).rates).toEqual(sample.rates);
  });
});
