import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadMigrations, migrate } from '../worker/migrate.ts';
import { withClient as withUrlClient } from './database.ts';
import { openDatabase } from './harness.ts';

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
    expect(tables.rows.map((r) => r.table_name)).toEqual(['all_jobs', 'finished_jobs', 'job_keys', 'jobs', 'migrations', 'workers']);
    const indexes = await pool.query(`select indexname from pg_indexes where schemaname = 'pgq' and tablename = 'jobs' order by 1`);
    expect(indexes.rows.map((r) => r.indexname)).toEqual(['jobs_cancel_requested', 'jobs_claim_any', 'jobs_claim_queue', 'jobs_expiry', 'jobs_pkey']);
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
});
