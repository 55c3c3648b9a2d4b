import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadMigrations, migrate, schemaIsCurrent } from '../worker/migrate.ts';
import { withClient as withUrlClient } from './database.ts';
import { enqueue } from '../worker/enqueue.ts';
import { openDatabase, waitFor } from './harness.ts';

let url: string;
let pool: pg.Pool;

beforeAll(async () => {
  ({ url, pool } = await openDatabase({ empty: true }));
});
afterAll(async () => {
  await pool.end();
});

const withClient = <T>(fn: (c: pg.Client) => Promise<T>) => withUrlClient(url, fn);

describe('migrations', () => {
  it('ten runners at once serialise on the lock; the schema ends up right, each migration applied once', async () => {
    const all = await loadMigrations();
    const results = await Promise.all(Array.from({ length: 10 }, () => withClient((c) => migrate(c))));
    const applied = results.flatMap((r) => r.applied);
    expect(applied).toEqual(all.map((m) => m.name));
    expect(results.every((r) => r.current === all.at(-1)!.id)).toBe(true);
    const { rows } = await pool.query(`select name from pgq.migrations order by id`);
    expect(rows.map((r) => r.name)).toEqual(all.map((m) => m.name));
    const tables = await pool.query(`select table_name from information_schema.tables where table_schema = 'pgq' order by 1`);
    expect(tables.rows.map((r) => r.table_name)).toEqual(['all_jobs', 'finished_jobs', 'job_keys', 'jobs', 'maintenance', 'migrations', 'workers']);
    const indexes = await pool.query(`select indexname from pg_indexes where schemaname = 'pgq' and tablename = 'jobs' order by 1`);
    expect(indexes.rows.map((r) => r.indexname)).toEqual(['jobs_cancel_requested', 'jobs_claim_any', 'jobs_claim_queue', 'jobs_expiry', 'jobs_pkey', 'jobs_running_worker']);
  });

  it('a second run is a no-op', async () => {
    const result = await withClient((c) => migrate(c));
    expect(result.applied).toEqual([]);
  });

  it('an applied migration whose file changed is an error naming it', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'pgq-mig-'));
    for (const m of await loadMigrations()) {
      await fs.writeFile(path.join(dir, m.name), m.name.startsWith('0001') ? `${m.sql}\n-- edited\n` : m.sql);
    }
    const edited = await loadMigrations(dir);
    await expect(withClient((c) => migrate(c, edited))).rejects.toThrow(/0001_queue\.sql was changed after it was applied/);
  });

  it('a failing migration rolls back and is not recorded', async () => {
    const broken = [...(await loadMigrations()), { id: 9999, name: '9999_broken.sql', sql: 'create table pgq.half (x int); select 1/0;', checksum: 'x' }];
    await expect(withClient((c) => migrate(c, broken))).rejects.toThrow(/9999_broken\.sql failed: division by zero/);
    const { rows } = await pool.query(`select to_regclass('pgq.half') as t, (select count(*)::int from pgq.migrations where id = 9999) as n`);
    expect(rows[0]).toEqual({ t: null, n: 0 });
  });

  it('files must be named NNNN_name.sql', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'pgq-mig-'));
    await fs.writeFile(path.join(dir, 'init.sql'), 'select 1');
    await expect(loadMigrations(dir)).rejects.toThrow(/init\.sql is not named NNNN_name\.sql/);
  });

  it('a migration waiting for a table lock gives way after lock_timeout, so enqueues are not queued behind it, and retries', async () => {
    const blocker = await pool.connect();
    await blocker.query('begin; lock table pgq.jobs in access share mode');
    const extra = [...(await loadMigrations()), { id: 9998, name: '9998_extra.sql', sql: 'alter table pgq.jobs add column extra int', checksum: 'e' }];
    const waits: string[] = [];
    const migrating = withClient((c) => migrate(c, extra, { lockTimeoutMs: 300, onLockWait: (name) => waits.push(name) }));
    await waitFor(() => waits.length > 0, 'the migration to give way once');
    // Without the lock timeout this insert queued behind the migration's lock request for as long as the blocker lived.
    const enqueued = await withClient(async (c) => {
      await c.query(`set statement_timeout = 5000`);
      return enqueue(c, { task: 'noop' });
    });
    expect(enqueued.id).toMatch(/^\d+$/);
    await blocker.query('commit');
    blocker.release();
    expect((await migrating).applied).toEqual(['9998_extra.sql']);
    expect(waits.every((w) => w === '9998_extra.sql')).toBe(true);
    await pool.query('alter table pgq.jobs drop column extra; delete from pgq.migrations where id = 9998; delete from pgq.jobs');
  });

  it('migrations run without the session statement timeout', async () => {
    const slow = [...(await loadMigrations()), { id: 9997, name: '9997_slow.sql', sql: 'select pg_sleep(0.5)', checksum: 's' }];
    const result = await withClient(async (c) => {
      await c.query('set statement_timeout = 200');
      return migrate(c, slow);
    });
    expect(result.applied).toEqual(['9997_slow.sql']);
    await pool.query('delete from pgq.migrations where id = 9997');
  });

  it('an older version runs on a newer schema whose migrations declare they serve it (rolling update, rollback)', async () => {
    const all = await loadMigrations();
    await withClient((c) => migrate(c, all));
    const older = all.filter((m) => m.id < 3);
    expect(all.find((m) => m.id === 3)?.compatibleFrom).toBe(2);
    expect((await withClient((c) => migrate(c, older))).applied).toEqual([]);
    expect(await schemaIsCurrent(pool, older)).toBe(true);
    expect(await schemaIsCurrent(pool, all)).toBe(true);
    // A newer migration that does not declare it: the older code refuses, as before.
    const newer = [...all, { id: 9996, name: '9996_contract.sql', sql: 'select 1', checksum: 'c' }];
    await withClient((c) => migrate(c, newer));
    await expect(withClient((c) => migrate(c, all))).rejects.toThrow(/9996_contract\.sql, which this version does not know/);
    expect(await schemaIsCurrent(pool, all)).toBe(false);
    await pool.query('delete from pgq.migrations where id = 9996');
  });

  it('a compatibility marker must name an earlier migration', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'pgq-mig-'));
    await fs.writeFile(path.join(dir, '0001_a.sql'), '-- pgq:compatible-from 1\nselect 1');
    await expect(loadMigrations(dir)).rejects.toThrow(/0001_a\.sql says pgq:compatible-from 1/);
  });
});
