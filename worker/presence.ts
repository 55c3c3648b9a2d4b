import pg from 'pg';
import { describeError } from './errors.ts';
import { workerLockKey } from './locks.ts';
import type { Logger } from './logger.ts';
import { backoffMs } from './backoff.ts';
import { sessionSettings, type DeadlineClass } from './deadlines.ts';
import { applySessionSettings } from './sql/session.ts';
import { JOBS_CHANNEL } from './sql/shared.ts';
import * as q from './sql/workers.ts';

export interface PresenceOptions {
  readonly connection: pg.ClientConfig;
  readonly host: string;
  readonly pid: number;
  readonly queues: readonly string[] | null;
  readonly concurrency: number;
  readonly version: string;
  readonly heartbeatMs: number;
  /** Deadlines of the presence session: a heartbeat that hangs means a connection to replace. */
  readonly deadline?: DeadlineClass;
  readonly logger: Logger;
  /** Jobs this process is running now (reported with each heartbeat). */
  readonly inFlight: () => number;
  /** The host's CPU utilisation since the last heartbeat. */
  readonly cpu: () => number | null;
  /** A job notification arrived; `queue` is empty when it may concern any queue. */
  readonly onNotify: (queue: string) => void;
  /** Cancellation was requested for these running jobs. */
  readonly onCancel: (ids: string[]) => void;
  /** A heartbeat got through: the database answers this worker. */
  readonly onHeartbeat?: () => void;
}

/**
 * The worker's one long-lived connection. It holds the session advisory lock that tells the
 * others this worker is alive (Postgres releases it the moment the connection drops, however the
 * process died), LISTENs for new jobs, and sends heartbeats. When it drops, the worker stops
 * claiming until it is back: a worker without its lock would look dead, and its new jobs would
 * be taken from it.
 */
export class Presence {
  private client: pg.Client | undefined;
  private id: string | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  /** Reconnects in a row that failed; sizes the pause before the next. */
  private failures = 0;
  private closed = false;
  private readyNow = false;
  private readyWaiters: (() => void)[] = [];

  constructor(private readonly options: PresenceOptions) {}

  /** This worker's id in pgq.workers, once registered. */
  get workerId(): string | undefined {
    return this.id;
  }

  /** Registered, holding the lock and listening. */
  get ready(): boolean {
    return this.readyNow;
  }

  /** Connect and register, retrying until it works or close() is called. */
  start(): Promise<void> {
    void this.connect();
    return this.whenReady();
  }

  /** Resolves once ready (at once when ready already). */
  whenReady(): Promise<void> {
    if (this.readyNow || this.closed) return Promise.resolve();
    return new Promise((resolve) => this.readyWaiters.push(resolve));
  }

  private async connect(): Promise<void> {
    if (this.closed) return;
    const log = this.options.logger;
    const deadline = this.options.deadline;
    const client = new pg.Client({
      ...this.options.connection,
      keepAlive: true,
      connectionTimeoutMillis: 10_000,
      query_timeout: deadline?.clientMs,
      application_name: `pgq-worker ${process.pid} presence`,
    });
    this.client = client;
    client.on('error', (error) => this.lost(client, error));
    client.on('end', () => this.lost(client, new Error('connection ended')));
    client.on('notification', (msg) => {
      if (msg.channel === JOBS_CHANNEL) this.options.onNotify(msg.payload ?? '');
    });
    try {
      await client.connect();
      if (deadline) await applySessionSettings(client, sessionSettings(deadline));
      await this.register(client);
      await client.query(`listen ${JOBS_CHANNEL}`);
    } catch (error) {
      this.lost(client, error);
      return;
    }
    if (this.client !== client || this.closed) return;
    this.failures = 0;
    this.readyNow = true;
    log.info({ workerId: this.id }, 'worker registered and listening');
    for (const resolve of this.readyWaiters.splice(0)) resolve();
    this.heartbeatTimer = setInterval(() => void this.beat(client), this.options.heartbeatMs);
    // A notification sent while this connection was down is lost: look for work at once.
    this.options.onNotify('');
  }

  /**
   * Keep the id across reconnects so jobs this process still runs can be settled, unless the
   * old session still holds the lock (the server has not noticed it is gone): then start over
   * with a new id rather than wait for that.
   */
  private async register(client: pg.Client): Promise<void> {
    const o = this.options;
    const worker = { host: o.host, pid: o.pid, queues: o.queues, concurrency: o.concurrency, version: o.version };
    if (this.id) {
      if (await q.tryLockWorkerPresence(client, workerLockKey(this.id))) {
        await q.insertWorker(client, { ...worker, id: this.id });
        return;
      }
      o.logger.warn({ workerId: this.id }, 'previous session still holds this worker id; registering anew');
    }
    await client.query('begin');
    try {
      const id = await q.insertWorker(client, worker);
      await q.lockWorkerPresence(client, workerLockKey(id));
      await client.query('commit');
      this.id = id;
    } catch (error) {
      await client.query('rollback').catch(() => {});
      throw error;
    }
  }

  private async beat(client: pg.Client): Promise<void> {
    if (!this.id || this.client !== client || !this.readyNow) return;
    try {
      const cancel = await q.heartbeat(client, this.id, this.options.inFlight(), this.options.cpu());
      this.options.onHeartbeat?.();
      if (cancel === null) {
        // Declared dead (the heartbeat came too late); this session still holds the lock.
        this.options.logger.warn({ workerId: this.id }, 'worker row was removed by a rescuer; registering again');
        await q.insertWorker(client, {
          id: this.id,
          host: this.options.host,
          pid: this.options.pid,
          queues: this.options.queues,
          concurrency: this.options.concurrency,
          version: this.options.version,
        });
      } else if (cancel.length > 0) {
        this.options.onCancel(cancel);
      }
    } catch (error) {
      this.lost(client, error);
    }
  }

  private lost(client: pg.Client, error: unknown): void {
    if (this.client !== client) return;
    this.client = undefined;
    this.readyNow = false;
    clearInterval(this.heartbeatTimer);
    client.removeAllListeners('end');
    client.on('error', () => {});
    void client.end().catch(() => {});
    if (this.closed) return;
    const pauseMs = backoffMs(++this.failures, { baseMs: 100, maxMs: 5_000 });
    this.options.logger.warn({ err: describeError(error), retryInMs: pauseMs }, 'database connection lost; reconnecting');
    this.reconnectTimer = setTimeout(() => void this.connect(), pauseMs);
  }

  /** Deregister and disconnect. The lock goes with the connection. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.heartbeatTimer);
    clearTimeout(this.reconnectTimer);
    for (const resolve of this.readyWaiters.splice(0)) resolve();
    const client = this.client;
    this.client = undefined;
    this.readyNow = false;
    if (!client) return;
    client.removeAllListeners('end');
    client.on('error', () => {});
    try {
      if (this.id) await q.deleteWorker(client, this.id);
    } catch {
      // The rescuer removes the row of a worker whose lock is gone.
    }
    await client.end().catch(() => {});
  }
}
