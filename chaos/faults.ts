/**
 * The faults of a chaos run, in the order they are made. Each one breaks something for real
 * (a signal to a process, a server stopped, a proxy that swallows replies) and returns once it
 * has healed; the runner then measures how the fleet recovered.
 */
import pg from 'pg';
import type { Cluster } from './cluster.ts';
import { until } from './cluster.ts';
import type { Feeder } from './feeder.ts';
import type { Fleet } from './fleet.ts';
import { keyOf } from './mix.ts';

export interface FaultContext {
  readonly cluster: Cluster;
  readonly fleet: Fleet;
  readonly feeder: Feeder;
  readonly random: () => number;
  /** The workers' lease (WORKER_LEASE_MS). */
  readonly leaseMs: number;
  /** Scale for how long faults last: 1 in the full run, less in the short one. */
  readonly scale: number;
  /** The previous release's source tree, for the mixed-version fault. */
  readonly previousTree: string;
}

export interface FaultResult {
  /** What happened, in a few words, for the report. */
  readonly note?: string;
  /** For an asynchronous promotion: the window whose commits were lost. */
  readonly lostWindow?: { readonly from: number; readonly to: number };
}

export interface Fault {
  readonly id: string;
  readonly name: string;
  run(ctx: FaultContext): Promise<FaultResult>;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const seconds = (ctx: FaultContext, full: number, least = 2) => Math.max(least, full * ctx.scale) * 1_000;
const isWorker = (c: { applicationName: string }) => c.applicationName.startsWith('pgq-worker ');
const isPresence = (c: { applicationName: string }) => isWorker(c) && c.applicationName.endsWith(' presence');

async function restartQueueServer(ctx: FaultContext, stop: 'stop' | 'crash', downMs: number): Promise<string> {
  const server = ctx.cluster.queue;
  if (!server.restart || !server.stop) throw new Error('the queue server cannot be restarted after a promotion; order the faults so');
  await (stop === 'stop' ? server.stop() : server.crash());
  await sleep(downMs);
  await server.restart();
  return `down ${(downMs / 1000).toFixed(0)} s`;
}

async function waitForExit(member: { exited: Promise<unknown> }, ms: number): Promise<boolean> {
  return Promise.race([member.exited.then(() => true), sleep(ms).then(() => false)]);
}

export const FAULTS: readonly Fault[] = [
  {
    id: '1',
    name: 'SIGKILL of a random worker every few seconds (the supervisor restarts it)',
    async run(ctx) {
      const end = Date.now() + seconds(ctx, 20, 8);
      let kills = 0;
      while (Date.now() < end) {
        ctx.fleet.signal(ctx.fleet.pick(ctx.random), 'SIGKILL');
        kills++;
        await sleep(2_000 + ctx.random() * 2_000);
      }
      return { note: `${kills} kills` };
    },
  },
  {
    id: '2',
    name: 'SIGTERM of a worker with jobs in flight',
    async run(ctx) {
      const member = ctx.fleet.pick(ctx.random);
      ctx.fleet.signal(member, 'SIGTERM');
      const exited = await waitForExit(member, 60_000);
      return { note: exited ? 'exited' : 'did not exit within 60 s' };
    },
  },
  { id: '3', name: 'Postgres stopped (fast) and started', run: async (ctx) => ({ note: await restartQueueServer(ctx, 'stop', 2_000) }) },
  { id: '4', name: 'Postgres crashed (-m immediate) and restarted', run: async (ctx) => ({ note: await restartQueueServer(ctx, 'crash', 1_000) }) },
  {
    id: '5',
    name: 'one Postgres backend SIGKILLed (the postmaster resets every session)',
    async run(ctx) {
      const { rows } = await ctx.cluster.admin.query<{ pid: number }>(
        `select pid from pg_stat_activity where application_name like 'pgq-worker %' and state is not null order by random() limit 1`,
      );
      if (rows.length === 0) throw new Error('no worker backend to kill');
      process.kill(rows[0]!.pid, 'SIGKILL');
      // Healed when a new session gets in: until the reset is over the postmaster refuses them.
      await sleep(200);
      await until(
        async () => {
          const probe = new pg.Client({ connectionString: ctx.cluster.queue.url, application_name: 'chaos-probe' });
          probe.on('error', () => {});
          try {
            await probe.connect();
            return (await probe.query('select 1')).rowCount === 1;
          } finally {
            await probe.end().catch(() => {});
          }
        },
        60_000,
        'the server to accept sessions again',
      );
      return { note: `backend ${rows[0]!.pid}` };
    },
  },
  {
    id: '6',
    name: 'pg_terminate_backend of every worker connection',
    async run(ctx) {
      const { rows } = await ctx.cluster.admin.query<{ n: number }>(
        `select count(*)::int as n from (select pg_terminate_backend(pid) from pg_stat_activity where application_name like 'pgq-worker %') t`,
      );
      return { note: `${rows[0]!.n} sessions` };
    },
  },
  {
    id: '7',
    name: 'proxy drops a server reply after the server processed it and resets the connection, repeatedly',
    async run(ctx) {
      ctx.cluster.proxy.dropRepliesAndReset(1_000_000, isWorker, 0.02);
      await sleep(seconds(ctx, 20, 8));
      const dropped = ctx.cluster.proxy.dropped;
      ctx.cluster.proxy.heal();
      return { note: `${dropped} replies dropped in all so far` };
    },
  },
  {
    id: '8',
    name: "the pool's connections black-holed while the LISTEN connection lives",
    async run(ctx) {
      ctx.cluster.proxy.blackHole((c) => isWorker(c) && !isPresence(c), { newConnections: true });
      await sleep(seconds(ctx, 15, 8));
      ctx.cluster.proxy.heal();
      return {};
    },
  },
  {
    id: '9',
    name: 'the LISTEN connection black-holed (heartbeats and notifications stop) while the pool works',
    async run(ctx) {
      ctx.cluster.proxy.blackHole(isPresence, { newConnections: true });
      await sleep(seconds(ctx, 15, 8));
      ctx.cluster.proxy.heal();
      return {};
    },
  },
  {
    id: '10',
    name: 'a database outage of twice the worker lease',
    run: async (ctx) => ({ note: await restartQueueServer(ctx, 'stop', 2 * ctx.leaseMs) }),
  },
  {
    id: '11',
    name: 'a transaction holding back xmin',
    async run(ctx) {
      const holdMs = seconds(ctx, 60, 10);
      const client = new pg.Client({ connectionString: ctx.cluster.queue.url, application_name: 'chaos-xmin' });
      await client.connect();
      try {
        await client.query('begin isolation level repeatable read');
        await client.query('select txid_current(), count(*) from pgq.jobs');
        await sleep(holdMs);
        await client.query('commit');
      } finally {
        await client.end();
      }
      return { note: `held ${(holdMs / 1000).toFixed(0)} s` };
    },
  },
  {
    id: '12',
    name: 'Postgres at max_connections (a worker started meanwhile must wait and retry)',
    async run(ctx) {
      const fillers: pg.Client[] = [];
      try {
        for (;;) {
          const c = new pg.Client({ connectionString: ctx.cluster.queue.url, application_name: 'chaos-filler' });
          c.on('error', () => {});
          try {
            await c.connect();
          } catch {
            break;
          }
          fillers.push(c);
          if (fillers.length > 1_000) throw new Error('max_connections never reached');
        }
        // A new worker process meets the full server: it must say so and keep trying.
        ctx.fleet.signal(ctx.fleet.pick(ctx.random), 'SIGKILL');
        await sleep(seconds(ctx, 15, 8));
      } finally {
        await Promise.all(fillers.map((c) => c.end().catch(() => {})));
      }
      return { note: `${fillers.length} connections taken` };
    },
  },
  {
    id: '13',
    name: "a worker whose event loop is blocked past its lease (an at-most-once job blocks it)",
    async run(ctx) {
      const blockMs = ctx.leaseMs + 5_000;
      const [n] = await ctx.feeder.extra(
        (k) => ({ spec: { task: 'chaos', idempotencyKey: keyOf(k), delivery: 'at_most_once', payload: { n: k, kind: 'block', ms: blockMs, failTimes: 0 } }, design: 'succeed' }),
        1,
      );
      // Done when its late outcome has replaced the rescuer's "outcome unknown".
      await until(
        async () => (await ctx.cluster.admin.query(`select 1 from pgq.finished_jobs where idempotency_key = $1 and state = 'succeeded'`, [keyOf(n!)])).rowCount === 1,
        blockMs + 60_000,
        'the blocked job to be recorded succeeded',
      );
      return { note: `blocked ${(blockMs / 1000).toFixed(0)} s` };
    },
  },
  {
    id: '14',
    name: 'SIGTERM during a database outage',
    async run(ctx) {
      const server = ctx.cluster.queue;
      if (!server.stop || !server.restart) throw new Error('the queue server cannot be restarted after a promotion');
      await server.stop();
      const member = ctx.fleet.pick(ctx.random);
      ctx.fleet.signal(member, 'SIGTERM');
      await sleep(3_000);
      await server.restart();
      const exited = await waitForExit(member, 90_000);
      return { note: exited ? 'down 3 s; the worker exited after the database came back' : 'the worker did not exit' };
    },
  },
  {
    id: '15a',
    name: 'a synchronous streaming standby promoted',
    async run(ctx) {
      const p = await ctx.cluster.failOver('sync', async () => {
        await sleep(3_000);
      });
      return { note: `promotion took ${((p.endedAt - p.startedAt) / 1000).toFixed(1)} s` };
    },
  },
  {
    id: '15b',
    name: 'an asynchronous standby promoted after replication stopped (a lost window)',
    async run(ctx) {
      let cutAt = 0;
      const p = await ctx.cluster.failOver(
        'async',
        async () => {
          cutAt = Date.now();
          await sleep(3_000);
        },
        ctx.feeder,
      );
      return { note: `3 s lost window; promotion took ${((p.endedAt - p.startedAt) / 1000).toFixed(1)} s`, lostWindow: { from: cutAt, to: p.endedAt } };
    },
  },
  {
    id: '16',
    name: 'an older worker version against the newer schema: a rollout and a rollback',
    async run(ctx) {
      const older = ctx.fleet.spawnExtra(ctx.previousTree);
      await until(async () => (await ctx.cluster.admin.query('select 1 from pgq.workers where pid = $1', [older.pid])).rowCount === 1, 60_000, 'the older worker to register');
      await sleep(seconds(ctx, 10, 5));
      // Rollback: a newer one stops, the older one drains beside the rest.
      ctx.fleet.signal(ctx.fleet.pick(ctx.random), 'SIGTERM');
      await sleep(seconds(ctx, 10, 5));
      // The older one is killed mid-run: the newer ones' rules take its jobs back.
      ctx.fleet.signal(older, 'SIGKILL');
      await older.exited;
      return { note: 'older release beside the newer, then SIGKILLed' };
    },
  },
  {
    id: '17',
    name: 'poison outcomes (results and errors Postgres refuses)',
    async run(ctx) {
      const ns = await ctx.feeder.extra(
        (k) => ({
          spec: { task: 'chaos', idempotencyKey: keyOf(k), delivery: k % 2 === 0 ? 'at_most_once' : 'at_least_once', payload: { n: k, kind: k % 4 < 2 ? 'poison-result' : 'poison-error', ms: 0, failTimes: 0 } },
          design: 'poison',
        }),
        20,
      );
      await until(
        async () => (await ctx.cluster.admin.query<{ n: number }>('select count(*)::int as n from pgq.finished_jobs where idempotency_key = any($1::text[])', [ns.map(keyOf)])).rows[0]!.n === ns.length,
        60_000,
        'the poison jobs to end',
      );
      return { note: '20 jobs' };
    },
  },
];
