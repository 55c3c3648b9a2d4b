import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import type pg from 'pg';
import { backoffMs } from './backoff.ts';
import { ADVISORY_CLASS, MIGRATION_LOCK } from './locks.ts';

/** A numbered SQL file from migrations/. */
export interface Migration {
  readonly id: number;
  readonly name: string;
  readonly sql: string;
  readonly checksum: string;
  /**
   * The oldest code this schema still serves, named by the newest migration that code knows:
   * an additive migration (expand, never contract) declares `-- pgq:compatible-from N` so that
   * code knowing only up to N keeps running beside it (a rolling update, a rollback). Without
   * the line, only code that knows this migration may run.
   */
  readonly compatibleFrom?: number;
}

const COMPATIBLE_FROM = /^--\s*pgq:compatible-from\s+(\d+)\s*$/m;

export interface MigrateResult {
  /** Names of the migrations this run applied, in order. */
  readonly applied: string[];
  /** Id of the newest migration now in the database. */
  readonly current: number;
}

// Source runs from worker/, the build from dist/worker/: the SQL stays at the project root.
const candidates = ['../migrations/', '../../migrations/'].map((p) => fileURLToPath(new URL(p, import.meta.url)));

/** Where the bundled migrations are. */
export async function migrationsDir(): Promise<string> {
  for (const dir of candidates) {
    if (await fs.stat(dir).then((s) => s.isDirectory(), () => false)) return dir;
  }
  throw new Error(`migrations: folder not found (looked in ${candidates.join(', ')})`);
}

/** Read and order the migration files: `NNNN_name.sql`, ids unique and increasing. */
export async function loadMigrations(dir?: string): Promise<Migration[]> {
  const folder = dir ?? (await migrationsDir());
  const files = (await fs.readdir(folder)).filter((f) => f.endsWith('.sql')).sort();
  const migrations: Migration[] = [];
  for (const file of files) {
    const match = /^(\d+)_[\w-]+\.sql$/.exec(file);
    if (!match) throw new Error(`migrations: ${file} is not named NNNN_name.sql`);
    const id = Number(match[1]);
    if (migrations.some((m) => m.id === id)) throw new Error(`migrations: two files share number ${id} (${file})`);
    const sql = await fs.readFile(path.join(folder, file), 'utf8');
    const marker = COMPATIBLE_FROM.exec(sql);
    const compatibleFrom = marker ? Number(marker[1]) : undefined;
    if (compatibleFrom !== undefined && compatibleFrom >= id) {
      throw new Error(`migrations: ${file} says pgq:compatible-from ${compatibleFrom}, which must be an earlier migration`);
    }
    migrations.push({ id, name: file, sql, checksum: createHash('sha256').update(sql).digest('hex'), compatibleFrom });
  }
  return migrations;
}

export interface MigrateOptions {
  /**
   * How long one migration waits for a table lock before it gives up, rolls back and tries
   * again after a pause (default 2 s). Waiting longer would queue every enqueue and claim on that
   * table behind the migration's lock request.
   */
  readonly lockTimeoutMs?: number;
  /** Give up after waiting this long in all (default 10 minutes). */
  readonly maxWaitMs?: number;
  /** Told of each retry: the migration and the pause before it is tried again. */
  readonly onLockWait?: (migration: string, retryInMs: number) => void;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Take the migration lock without a statement that waits (a session's statement_timeout would cut it). */
async function lockMigrations(client: pg.ClientBase): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    const { rows } = await client.query<{ ok: boolean }>('select pg_try_advisory_lock($1, $2) as ok', [ADVISORY_CLASS, MIGRATION_LOCK]);
    if (rows[0]!.ok) return;
    await sleep(backoffMs(attempt, { baseMs: 50, maxMs: 250 }));
  }
}

/** One migration and its record in one transaction, without a statement timeout, under a short lock timeout. */
async function applyOne(client: pg.ClientBase, m: Migration, lockTimeoutMs: number): Promise<void> {
  await client.query('begin');
  try {
    await client.query(`select set_config('statement_timeout', '0', true), set_config('lock_timeout', $1, true)`, [String(lockTimeoutMs)]);
    await client.query(m.sql);
    await client.query('insert into pgq.migrations (id, name, checksum, compatible_from) values ($1, $2, $3, $4)', [
      m.id,
      m.name,
      m.checksum,
      m.compatibleFrom ?? null,
    ]);
    await client.query('commit');
  } catch (error) {
    await client.query('rollback');
    throw error;
  }
}

/**
 * Apply every pending migration. Runners that start together queue on one advisory lock, so the
 * second finds nothing to do; each migration commits with its record, so a failure leaves the
 * schema at the last good step. A recorded migration whose file changed since is an error: the
 * database no longer matches what the code expects, and silently going on would hide that.
 */
export async function migrate(client: pg.ClientBase, migrations?: Migration[], options: MigrateOptions = {}): Promise<MigrateResult> {
  const all = migrations ?? (await loadMigrations());
  const lockTimeoutMs = options.lockTimeoutMs ?? 2_000;
  const giveUpAt = Date.now() + (options.maxWaitMs ?? 600_000);
  await lockMigrations(client);
  try {
    await client.query(`create schema if not exists pgq`);
    await client.query(`create table if not exists pgq.migrations (
      id integer primary key,
      name text not null,
      checksum text not null,
      applied_at timestamptz not null default now())`);
    await client.query(`alter table pgq.migrations add column if not exists compatible_from integer`);
    const { rows } = await client.query<{ id: number; name: string; checksum: string; compatible_from: number | null }>(
      'select id, name, checksum, compatible_from from pgq.migrations order by id',
    );
    const recorded = new Map(rows.map((r) => [r.id, r]));
    for (const m of all) {
      const done = recorded.get(m.id);
      if (done && done.checksum !== m.checksum) {
        throw new Error(`migrations: ${m.name} was changed after it was applied (recorded as ${done.name}); add a new migration instead`);
      }
    }
    const known = new Set(all.map((m) => m.id));
    const latest = Math.max(0, ...all.map((m) => m.id));
    const incompatible = rows.filter((r) => !known.has(r.id) && !servesCode(r.compatible_from, latest));
    if (incompatible.length > 0) {
      throw new Error(`migrations: the database has ${incompatible.map((r) => r.name).join(', ')}, which this version does not know; run a newer version`);
    }
    const applied: string[] = [];
    for (const m of all) {
      if (recorded.has(m.id)) continue;
      for (let attempt = 1; ; attempt++) {
        try {
          await applyOne(client, m, lockTimeoutMs);
          break;
        } catch (error) {
          const lockWait = (error as { code?: string }).code === '55P03';
          if (!lockWait || Date.now() >= giveUpAt) {
            const why = lockWait ? `could not get its locks within ${options.maxWaitMs ?? 600_000} ms` : (error as Error).message;
            throw new Error(`migrations: ${m.name} failed: ${why}`, { cause: error });
          }
          const pauseMs = backoffMs(attempt, { baseMs: 500, maxMs: 10_000 });
          options.onLockWait?.(m.name, pauseMs);
          await sleep(pauseMs);
        }
      }
      applied.push(m.name);
    }
    return { applied, current: Math.max(0, ...all.map((m) => m.id)) };
  } finally {
    await client.query('select pg_advisory_unlock($1, $2)', [ADVISORY_CLASS, MIGRATION_LOCK]).catch(() => {});
  }
}

/** Whether a migration recorded with `compatibleFrom` still serves code that knows up to `latest`. */
function servesCode(compatibleFrom: number | null, latest: number): boolean {
  return compatibleFrom !== null && compatibleFrom <= latest;
}

/**
 * Whether this code can run on the database's schema (for /readyz): it has every migration this
 * code ships, and any newer ones declare that they still serve it.
 */
export async function schemaIsCurrent(client: pg.ClientBase | pg.Pool, migrations: Migration[]): Promise<boolean> {
  const latest = Math.max(0, ...migrations.map((m) => m.id));
  const { rows } = await client.query<{ id: number; compatible_from: number | null }>(`select * from pgq.migrations order by id`);
  const ids = new Set(rows.map((r) => r.id));
  return (
    migrations.every((m) => ids.has(m.id)) &&
    rows.every((r) => r.id <= latest || servesCode(r.compatible_from ?? null, latest))
  );
}
