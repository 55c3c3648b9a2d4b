/** The deadline classes and session settings of worker/deadlines.ts, on a real server. */
import { afterAll, beforeAll, expect, it } from 'vitest';
import type pg from 'pg';
import { deadlinesFor } from '../worker/deadlines.ts';
import { silentLogger } from '../worker/logger.ts';
import { createWorkerPool } from '../worker/pool.ts';
import { openDatabase } from './harness.ts';

let url: string;
let admin: pg.Pool;

beforeAll(async () => {
  ({ url, pool: admin } = await openDatabase());
});
afterAll(() => admin.end());

it('the server statement timeout is shorter than the client deadline, in every class', () => {
  for (const leaseMs of [1_000, 15_000, 3_600_000]) {
    for (const statementTimeoutMs of [100, 10_000, 600_000]) {
      const d = deadlinesFor({ statementTimeoutMs, leaseMs });
      for (const c of [d.run, d.maintenance]) expect(c.clientMs).toBeGreaterThanOrEqual(c.statementMs + 1_000);
      expect(d.presence.clientMs).toBeGreaterThanOrEqual(d.presence.statementMs + 250);
      // A presence statement that hangs is given up on within half the lease, and soon.
      expect(d.presence.clientMs).toBeLessThanOrEqual(Math.min(leaseMs / 2, 7_500));
    }
  }
});

it("every pool session carries its class's statement timeout and the network settings, set after connecting", async () => {
  const pool = createWorkerPool({ connectionString: url }, { max: 2, deadline: { statementMs: 300, clientMs: 5_000 }, logger: silentLogger });
  try {
    const { rows } = await pool.query<Record<string, string>>(
      `select current_setting('statement_timeout') as statement_timeout,
              current_setting('idle_in_transaction_session_timeout') as idle,
              current_setting('client_connection_check_interval') as check_interval,
              current_setting('tcp_user_timeout') as tcp_user_timeout,
              current_setting('tcp_keepalives_idle') as keepalives_idle`,
    );
    // Over a local socket the tcp settings read back as 0 (they apply to TCP sessions); set they are.
    expect(rows[0]).toMatchObject({ statement_timeout: '300ms', idle: '30s', check_interval: '2s' });
    // A statement slower than the timeout comes back cancelled by the server, not given up on by the client.
    await expect(pool.query('select pg_sleep(2)')).rejects.toMatchObject({ code: '57014' });
  } finally {
    await pool.end();
  }
});

it('a statement on a session whose server stopped answering is given up on by its client deadline', async () => {
  const pool = createWorkerPool({ connectionString: url }, { max: 1, deadline: { statementMs: 60_000, clientMs: 500 }, logger: silentLogger });
  try {
    // The server takes longer than the client waits: the client stops waiting at its own deadline.
    await expect(pool.query('select pg_sleep(3)')).rejects.toThrow(/Query read timeout/);
    // The connection it was on is gone from the pool, not handed to the next query.
    const { rows } = await pool.query<{ ok: number }>('select 1 as ok');
    expect(rows[0]!.ok).toBe(1);
  } finally {
    await pool.end();
  }
});
