import pg from 'pg';
import { describeError } from './errors.ts';
import { sessionSettings, type DeadlineClass } from './deadlines.ts';
import type { Logger } from './logger.ts';
import { applySessionSettings } from './sql/session.ts';
import type { Queryable } from './sql/shared.ts';

/**
 * The worker's pool: each query gets the class's client deadline, each new session the class's
 * server settings before its first query (node-postgres runs a client's queries in order, so
 * the settings go first).
 */
export function createWorkerPool(connection: pg.ClientConfig, options: { max: number; deadline: DeadlineClass; logger: Logger }): pg.Pool {
  const pool = new pg.Pool({
    ...connection,
    max: options.max,
    keepAlive: true,
    connectionTimeoutMillis: 10_000,
    query_timeout: options.deadline.clientMs,
    // The pid tells an operator (and the tests) in pg_stat_activity which worker holds a connection.
    application_name: `pgq-worker ${process.pid}`,
  });
  const settings = sessionSettings(options.deadline);
  pool.on('connect', (client) => {
    // A failure here is a connection that is already broken: its first real query reports it.
    applySessionSettings(client, settings).catch((error: unknown) =>
      options.logger.warn({ err: describeError(error) }, 'could not apply session settings'),
    );
  });
  // Without a listener, a server shutdown becomes an uncaught exception; the pool reconnects by itself.
  pool.on('error', (error) => options.logger.warn({ err: describeError(error) }, 'idle database connection lost'));
  return pool;
}

/** `client` with `ms` as the client deadline of each query (a class other than the pool's). */
export function withQueryDeadline(client: pg.ClientBase, ms: number): Queryable {
  const query = (config: string | pg.QueryConfig, values?: unknown[]) =>
    client.query({ ...(typeof config === 'string' ? { text: config, values } : config), query_timeout: ms } as pg.QueryConfig);
  return { query } as Queryable;
}
