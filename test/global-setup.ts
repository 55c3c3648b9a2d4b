import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { startLocalPostgres, type LocalPostgres } from '../scripts/local-postgres.ts';
import { prepareTemplate } from './database.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Admin URL of the server the tests use (any database on it can be created). */
    adminUrl: string;
    /** Name of the migrated database that each test file clones. */
    templateDatabase: string;
  }
}

let server: LocalPostgres | undefined;
let scratch: string | undefined;

export async function setup(project: TestProject): Promise<void> {
  let adminUrl = process.env.DATABASE_URL;
  if (!adminUrl) {
    scratch = await fs.mkdtemp(path.join(os.tmpdir(), 'pgq-test-'));
    server = await startLocalPostgres(scratch);
    adminUrl = server.url;
  }
  project.provide('adminUrl', adminUrl);
  project.provide('templateDatabase', await prepareTemplate(adminUrl));
}

export async function teardown(): Promise<void> {
  await server?.stop();
  if (scratch) await fs.rm(scratch, { recursive: true, force: true });
}
