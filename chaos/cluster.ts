/**
 * The servers of a chaos run: the queue's Postgres (which the faults hit, and which a promotion
 * replaces), the ledger's (which nothing touches), and the TCP proxy every worker and the feeder
 * reach the queue through. The proxy keeps the address across a promotion, as Cloud SQL HA does.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { startLocalPostgres, type LocalPostgres } from '../scripts/local-postgres.ts';
import { startStandby, type Standby } from '../test/support/standby.ts';
import { TcpProxy } from '../test/support/tcp-proxy.ts';
import { migrate } from '../worker/index.ts';
import { createLedger } from './ledger.ts';

/** The queue's server now: the first one, or a promoted standby. */
export interface QueueServer {
  readonly url: string;
  readonly port: number;
  readonly dataDir: string;
  /** Clean stop and start again (only the first server: a promoted standby is not restarted). */
  readonly stop?: () => Promise<void>;
  readonly restart?: () => Promise<void>;
  crash(): Promise<void>;
}

export interface Promotion {
  /** When the promotion began (the old primary crashed) and ended (the proxy points at the new one). */
  readonly startedAt: number;
  readonly endedAt: number;
}

export class Cluster {
  private standbys = 0;
  private readonly cleanup: (() => Promise<void>)[] = [];

  private constructor(
    readonly baseDir: string,
    public queue: QueueServer,
    readonly ledger: LocalPostgres,
    readonly proxy: TcpProxy,
    /** The queue's server, directly: for the faults themselves (kill a backend, hold xmin...). */
    public admin: pg.Pool,
  ) {}

  static async start(baseDir: string): Promise<Cluster> {
    const first = await startLocalPostgres(path.join(baseDir, 'queue'), { settings: { max_connections: 100, wal_keep_size: '512MB' } });
    const ledger = await startLocalPostgres(path.join(baseDir, 'ledger'));
    const admin = adminPool(first.url);
    const client = await admin.connect();
    try {
      await migrate(client);
    } finally {
      client.release();
    }
    await createLedger(ledger.url);
    const proxy = await TcpProxy.start({ host: '127.0.0.1', port: first.port });
    const cluster = new Cluster(baseDir, first, ledger, proxy, admin);
    cluster.cleanup.push(() => first.stop(), () => ledger.stop());
    return cluster;
  }

  /** The URL the workers and the feeder use: through the proxy. */
  get queueUrl(): string {
    return this.proxy.urlFor(this.queue.url);
  }

  /**
   * Make a streaming standby of the queue's server, let `window` run (for an asynchronous one,
   * the replication is cut first, so what the primary commits meanwhile is lost), crash the
   * primary, promote the standby and point the proxy at it.
   */
  async failOver(mode: 'sync' | 'async', window: () => Promise<void>, quiesce?: { pause: () => Promise<void>; resume: () => void }): Promise<Promotion> {
    const name = `standby${++this.standbys}`;
    const dir = path.join(this.baseDir, name);
    await fs.mkdir(dir, { recursive: true });
    const replication = await TcpProxy.start({ host: '127.0.0.1', port: this.queue.port });
    const old = this.queue;
    const standby: Standby = await startStandby(old, dir, { name, source: { host: '127.0.0.1', port: replication.port } });
    this.cleanup.push(() => standby.stop(), () => replication.close());
    if (mode === 'sync') {
      await this.admin.query(`alter system set synchronous_standby_names = '${name}'`);
      await this.admin.query('select pg_reload_conf()');
      await until(async () => (await this.admin.query(`select 1 from pg_stat_replication where application_name = $1 and sync_state = 'sync'`, [name])).rowCount === 1);
    } else {
      // Every enqueue acknowledged before the cut reaches the standby first: the lost window
      // then starts at the cut, and a job missing afterwards was enqueued inside it.
      await quiesce?.pause();
      try {
        const { rows } = await this.admin.query<{ lsn: string }>('select pg_current_wal_lsn()::text as lsn');
        await until(
          async () => (await this.admin.query(`select 1 from pg_stat_replication where application_name = $1 and replay_lsn >= $2::pg_lsn`, [name, rows[0]!.lsn])).rowCount === 1,
          60_000,
          'the standby to replay every acknowledged enqueue',
        );
        replication.blackHole(() => true);
      } finally {
        quiesce?.resume();
      }
    }
    await window();
    const startedAt = Date.now();
    await old.crash();
    await standby.promote();
    this.proxy.retarget({ host: '127.0.0.1', port: standby.port });
    this.proxy.resetAll();
    const endedAt = Date.now();
    await this.admin.end().catch(() => {});
    this.admin = adminPool(standby.url);
    this.queue = { url: standby.url, port: standby.port, dataDir: standby.dataDir, crash: () => standby.crash() };
    return { startedAt, endedAt };
  }

  async close(): Promise<void> {
    await this.admin.end().catch(() => {});
    await this.proxy.close().catch(() => {});
    for (const fn of this.cleanup.reverse()) await fn().catch(() => {});
  }
}

function adminPool(url: string): pg.Pool {
  // Connections kept open: with the server at max_connections, a new one would be refused.
  const pool = new pg.Pool({ connectionString: url, max: 3, idleTimeoutMillis: 0, application_name: 'chaos-admin' });
  pool.on('error', () => {});
  return pool;
}

/** Poll `check` every 50 ms until it holds (a minute at most). */
export async function until(check: () => Promise<boolean> | boolean, timeoutMs = 60_000, what = 'a condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (await check()) return;
    } catch {
      // The server may be away: that is what the faults do.
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
