/** The backlog metric as the worker wires it: config through the one parser, the count, one writer. */
import { afterAll, describe, expect, it } from 'vitest';
import { parseWorkerConfig } from '../worker/config.ts';
import { enqueueMany, InvalidInputError } from '../worker/index.ts';
import { silentLogger } from '../worker/logger.ts';
import { Maintenance } from '../worker/maintenance.ts';
import { countDueJobs } from '../worker/sql/stats.ts';
import { openDatabase, waitFor } from './harness.ts';

const { pool } = await openDatabase();
afterAll(() => pool.end());

describe('the backlog metric in the worker', () => {
  it('is off by default; a bad BACKLOG_METRIC_* variable is one error naming it', () => {
    expect(parseWorkerConfig({}).backlogMetric).toBeNull();
    expect(() => parseWorkerConfig({ BACKLOG_METRIC: 'maybe' })).toThrow(InvalidInputError);
    expect(() => parseWorkerConfig({ BACKLOG_METRIC: 'maybe' })).toThrow(/^BACKLOG_METRIC: expected true or false/);
  });

  it('counts queued jobs that are due and unexpired, in the worker queues', async () => {
    const hourAhead = new Date(Date.now() + 3_600_000);
    await enqueueMany(pool, [
      { task: 'sleep', queue: 'a' },
      { task: 'sleep', queue: 'a' },
      { task: 'sleep', queue: 'b' },
      { task: 'sleep', queue: 'a', runAfter: hourAhead },
    ]);
    expect(await countDueJobs(pool, null)).toBe(3);
    expect(await countDueJobs(pool, ['a'])).toBe(2);
    expect(await countDueJobs(pool, ['c'])).toBe(0);
  });

  it('is published only after a maintenance pass this process led', async () => {
    let led = 0;
    const m = new Maintenance(
      { pool, logger: silentLogger, afterLeadingPass: () => void led++ },
      { leaseMs: 15_000, intervalMs: 100, retentionMs: 3_600_000 },
    );
    const holder = await pool.connect();
    try {
      // Another process holds the maintenance lock: its passes are skipped, nothing is published.
      await holder.query('begin');
      await holder.query('select pg_advisory_xact_lock(748201, -1)');
      m.start();
      await waitFor(async () => (await m.runOnce()).skipped, 'a skipped pass');
      expect(led).toBe(0);
      await holder.query('commit');
      await waitFor(() => led > 0, 'a led pass to publish');
    } finally {
      await m.stop();
      holder.release();
    }
  });
});
