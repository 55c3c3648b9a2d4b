import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { inject } from 'vitest';
import { migrate } from '../worker/migrate.ts';

function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

/** Run `fn` on a client of its own, connected to `url`, closed afterwards. */
export async function withClient<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** Create the migrated database that every test file clones (global setup). */
export async function prepareTemplate(adminUrl: string): Promise<string> {
  const name = `pgq_template_${randomBytes(4).toString('hex')}`;
  await withClient(adminUrl, (c) => c.query(`create database ${name}`));
  await withClient(withDatabase(adminUrl, name), (c) => migrate(c));
  return name;
}

/** A database of its own for one test file: migrated (cloned from the template) or empty. */
export async function createTestDatabase(options: { empty?: boolean } = {}): Promise<string> {
  const adminUrl = inject('adminUrl');
  const name = `pgq_test_${randomBytes(6).toString('hex')}`;
  const template = options.empty ? 'template0' : inject('templateDatabase');
  await withClient(adminUrl, (c) => c.query(`create database ${name} template ${template}`));
  return withDatabase(adminUrl, name);
}
