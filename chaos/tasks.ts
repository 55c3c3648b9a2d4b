/**
 * The chaos run's one task, loaded by the workers (WORKER_TASKS). Every execution writes itself
 * to the ledger, on a server no fault touches (CHAOS_LEDGER_URL), before it works and again when
 * its handler succeeded: the checks count executions there, never in logs.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import pg from 'pg';
import type { TaskHandler } from '../worker/tasks/types.ts';
import { parseChaosPayload } from './mix.ts';

let ledger: pg.Pool | undefined;
function ledgerPool(): pg.Pool {
  if (!ledger) {
    const url = process.env.CHAOS_LEDGER_URL;
    if (!url) throw new Error('CHAOS_LEDGER_URL: required by the chaos tasks');
    ledger = new pg.Pool({ connectionString: url, max: 4, application_name: 'chaos-ledger' });
    ledger.on('error', () => {});
  }
  return ledger;
}

/** A ledger write, retried: the ledger is never faulted, but a write must not be lost to a blip. */
async function write(sql: string, values: unknown[]): Promise<void> {
  for (let i = 0; ; i++) {
    try {
      await ledgerPool().query(sql, values);
      return;
    } catch (error) {
      if (i >= 100) throw error;
      await delay(100);
    }
  }
}

function ended(execution: string, outcome: 'ok' | 'threw'): Promise<void> {
  return write('update chaos_runs set ended_at = clock_timestamp(), outcome = $2 where execution = $1', [execution, outcome]);
}

const burnThread = new URL(`../worker/tasks/burn-thread${import.meta.url.slice(import.meta.url.lastIndexOf('.'))}`, import.meta.url);

const chaos: TaskHandler = async (payload, ctx) => {
  const p = parseChaosPayload(payload);
  const execution = randomUUID();
  // The execution id makes a retried insert whose first try committed a no-op. The older
  // release beside the newer one (fault 16) runs this module too, and its jobs have no token.
  await write(
    `insert into chaos_runs (n, job_id, attempt, token, pid, execution) values ($1, $2, $3, $4, $5, $6)
     on conflict (execution) do nothing`,
    [p.n, ctx.job.id, ctx.job.attempt, ctx.job.token ?? null, process.pid, execution],
  );
  switch (p.kind) {
    case 'sleep':
      await delay(p.ms, undefined, { signal: ctx.signal });
      break;
    case 'burn':
      await ctx.runOnThread(burnThread, { workMs: p.ms });
      break;
    case 'block':
      // The event loop itself stops: no heartbeat, no timer, nothing, as a runaway handler would.
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, p.ms);
      break;
    case 'poison-result':
      await ended(execution, 'ok');
      return { text: 'a NUL \u0000 that jsonb refuses' };
    case 'poison-error':
      await ended(execution, 'threw');
      throw new Error('an error text with a NUL \u0000 and a lone surrogate \ud800 in it');
  }
  if (ctx.job.attempt <= p.failTimes) {
    await ended(execution, 'threw');
    throw new Error(`failing on purpose (attempt ${ctx.job.attempt} of the first ${p.failTimes})`);
  }
  await ended(execution, 'ok');
  return { n: p.n, pid: process.pid };
};

export default { chaos };
