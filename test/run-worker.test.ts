import { afterAll, describe, expect, it } from 'vitest';
import { parseWorkerConfig, resolveWorkerConfig } from '../worker/config.ts';
import { enqueue, getJob, InvalidInputError, runWorker } from '../worker/index.ts';
import { openDatabase, waitFor } from './harness.ts';

const { url, pool } = await openDatabase();
afterAll(() => pool.end());

describe('runWorker()', () => {
  it('resolves the same defaults as the environment does', () => {
    const connection = { connectionString: url };
    const { connection: _fromEnv, ...env } = parseWorkerConfig({ DATABASE_URL: url });
    const { connection: _given, ...options } = resolveWorkerConfig(connection, {});
    expect(options).toEqual(env);
  });

  it.each([
    [{ concurrency: 0 }, /^concurrency: expected a whole number from 1 to 1000, got 0$/],
    [{ concurrency: 2.5 }, /^concurrency: /],
    [{ leaseMs: 5_000, rescueIntervalMs: 5_000 }, /^rescueIntervalMs: must be shorter than leaseMs \(5000\)$/],
    [{ retryBaseMs: 10_000, retryMaxMs: 1_000 }, /^retryMaxMs: must not be less than retryBaseMs/],
    [{ queues: [] }, /^queues: /],
    [{ logLevel: 'loud' }, /^logLevel: /],
    [{ retentionMs: Number.POSITIVE_INFINITY }, /^retentionMs: /],
  ])('rejects %j with an error naming the option', async (options, message) => {
    const attempt = runWorker({ connection: { connectionString: url }, ...options });
    await expect(attempt).rejects.toThrow(InvalidInputError);
    await expect(attempt).rejects.toThrow(message);
  });

  it('runs the given tasks and stops cleanly, exposing only what its owner needs', async () => {
    const runtime = await runWorker({
      connection: { connectionString: url },
      concurrency: 2,
      tasks: { greet: (payload) => `hello ${(payload as { name: string }).name}` },
    });
    try {
      expect(Object.keys(runtime).sort()).toEqual(['healthPort', 'inFlight', 'stop', 'workerId']);
      expect(runtime.healthPort).toBeNull();
      const { id } = await enqueue(pool, { task: 'greet', payload: { name: 'Ada' } });
      const job = await waitFor(async () => {
        const j = await getJob(pool, id);
        return j?.state === 'succeeded' ? j : undefined;
      }, 'the job to succeed');
      expect(job.result).toBe('hello Ada');
      expect(runtime.workerId).toBe(job.workerId);
    } finally {
      await runtime.stop(1_000);
    }
    const { rows } = await pool.query('select count(*)::int as n from pgq.workers');
    expect(rows[0].n).toBe(0);
  });
});
