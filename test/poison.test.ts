/**
 * Values Postgres refuses stay with their own job or call: a lone UTF-16 surrogate, a NUL, a
 * document nested deeper than the server parses. Before, one such result wedged the worker (its
 * settle statement failed and was resent for ever) and one such call failed every call sharing
 * its INSERT.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { enqueue, enqueueMany, getJob, InvalidInputError, type JobSpec } from '../worker/index.ts';
import type { TaskHandler } from '../worker/tasks/types.ts';
import { drain, manualWorker, openDatabase, waitFor } from './harness.ts';

const { pool } = await openDatabase();
afterAll(() => pool.end());

/** A value nested `depth` arrays deep: more than JSON.stringify can write (V8 gives up near 5,000). */
const nested = (depth: number) => JSON.parse('['.repeat(depth) + ']'.repeat(depth)) as unknown;

const tasks: Record<string, TaskHandler> = {
  cut: () => 'emoji cut in half: \ud83d',
  'nul-error': () => {
    throw new Error('bad\0byte');
  },
  'surrogate-error': () => {
    throw new Error('half an emoji \udc00 in the error');
  },
  literal: () => 'the six characters \\u0000 are fine',
  deep: () => nested(100_000),
  ok: () => 'fine',
};

describe('poison outcomes', () => {
  it('fail their own jobs with a clear error while the good ones succeed and the worker keeps claiming', async () => {
    const specs = [
      ...Array.from({ length: 5 }, () => ({ task: 'cut' })),
      ...Array.from({ length: 3 }, () => ({ task: 'nul-error' })),
      ...Array.from({ length: 2 }, () => ({ task: 'surrogate-error' })),
      ...Array.from({ length: 2 }, () => ({ task: 'deep' })),
      ...Array.from({ length: 2 }, () => ({ task: 'literal' })),
      ...Array.from({ length: 40 }, () => ({ task: 'ok' })),
    ];
    const jobs = await enqueueMany(pool, specs.sort(() => Math.random() - 0.5));
    const w = await manualWorker(pool, { tasks, concurrency: 8, batchSize: 8 });
    try {
      await waitFor(async () => {
        await drain(w.worker).catch(() => {});
        const { rows } = await pool.query<{ n: number }>(`select count(*)::int as n from pgq.jobs`);
        return rows[0]!.n === 0;
      }, 'every job to reach a terminal state');
    } finally {
      await w.close();
    }
    const all = await Promise.all(jobs.map((j) => getJob(pool, j.id)));
    const by = (task: string) => all.filter((j) => j!.task === task);
    for (const j of by('ok')) expect(j).toMatchObject({ state: 'succeeded', result: 'fine' });
    for (const j of by('literal')) expect(j).toMatchObject({ state: 'succeeded', result: 'the six characters \\u0000 are fine' });
    for (const j of by('cut')) {
      expect(j!.state).toBe('failed');
      expect(j!.error).toMatch(/^PermanentError: result: contains a lone UTF-16 surrogate/);
    }
    for (const j of by('nul-error')) expect(j).toMatchObject({ state: 'failed', error: 'bad\uFFFDbyte' });
    for (const j of by('surrogate-error')) expect(j).toMatchObject({ state: 'failed', error: 'half an emoji \uFFFD in the error' });
    for (const j of by('deep')) {
      expect(j!.state).toBe('failed');
      expect(j!.error).toMatch(/^PermanentError: result: not JSON-serialisable/);
    }
  });
});

describe('poison input', () => {
  it.each([
    ['a payload string cut inside an emoji', { task: 'ok', payload: { text: 'cut \ud83d' } }, /^payload: contains a lone UTF-16 surrogate/],
    ['a NUL in a payload string', { task: 'ok', payload: { text: 'nul \0' } }, /^payload: contains a NUL character/],
    ['a NUL in a payload key', { task: 'ok', payload: { ['key \0']: 1 } }, /^payload: contains a NUL character/],
    ['a NUL in the task name', { task: 'o\0k' }, /^task: contains a NUL character/],
    ['a lone surrogate in the queue name', { task: 'ok', queue: 'q\ud800' }, /^queue: contains a lone UTF-16 surrogate/],
    ['a NUL in the idempotency key', { task: 'ok', idempotencyKey: 'k\0' }, /^idempotencyKey: contains a NUL character/],
    ['a payload nested 100,000 deep', { task: 'ok', payload: nested(100_000) }, /^payload: not JSON-serialisable/],
    ['a runAfter before 4713 BC', { task: 'ok', runAfter: new Date(-8.64e15) }, /^runAfter: expected a date from 4713 BC/],
    ['an expiresAt at the end of JavaScript time', { task: 'ok', expiresAt: new Date(8.64e15) }, /^expiresAt: expected a date from 4713 BC/],
  ])('%s is refused with an error naming the field', async (_what, spec, message) => {
    const attempt = enqueue(pool, spec as JobSpec);
    await expect(attempt).rejects.toThrow(InvalidInputError);
    await expect(attempt).rejects.toThrow(message);
  });

  it('accepts the literal text \\u0000 and paired surrogates', async () => {
    const { id } = await enqueue(pool, { task: 'ok', payload: { text: 'a \\u0000 b', emoji: '😀' } });
    expect((await getJob(pool, id))!.payload).toEqual({ text: 'a \\u0000 b', emoji: '😀' });
  });

  it('one bad call among calls sharing an INSERT fails alone, with an error naming its field', async () => {
    const calls = Array.from({ length: 11 }, (_, i) => enqueue(pool, { task: 'ok', payload: i === 5 ? { text: 'cut \ud83d' } : { i } }));
    const results = await Promise.allSettled(calls);
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(10);
    expect(results[5]).toMatchObject({ status: 'rejected', reason: expect.any(InvalidInputError) });
  });
});
