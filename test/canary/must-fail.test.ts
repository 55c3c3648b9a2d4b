/**
 * Run only by `.ci/run` (PGQ_CANARY=1): a test that must fail, through the same global setup
 * (embedded Postgres) as the real suite, to prove that a failing test fails the test command.
 */
import { expect, it } from 'vitest';
import { openDatabase } from '../harness.ts';

it('fails on purpose', async () => {
  const { pool } = await openDatabase();
  const { rows } = await pool.query<{ one: number }>('select 1 as one');
  await pool.end();
  expect(rows[0]!.one).toBe(2);
});
