import pg from 'pg';
import { describeError } from './errors.ts';
import { drawWorkerId, workerLockKey } from './locks.ts';
import type { Logger } from './logger.ts';
import { backoffMs } from './backoff.ts';
import { sessionSettings, type DeadlineClass, type Liveness } from './deadlines.ts';
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
  /** The incarnation `workerId` was declared dead: abandon everything held under it. */
  readonly onRevoked?: (workerId: string) => void;
  /**
   * The server is not the one this worker last talked to (a promotion: a new timeline or
   * cluster). Commits of the last moments before it may be lost.
   */
  readonly onFailover?: (before: string, now: string) => void;
  /** The worker's own lease lapsed: no heartbeat acknowledged within its window. */
  readonly onLeaseLapsed?: () => void;
  /** The worker's own lease (livenessFor); without it, ready alone lets the worker run. */
  readonly liveness?: Liveness;
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
  /** Monotonic time of the last registration the server answered. */
  private registeredAt = -Infinity;
  private closed = false;
  private readyNow = false;
  private readyWaiters: (() => void)[] = [];
  /** Monotonic send time of the last heartbeat the database acknowledged. */
  private lastAckedAt = -Infinity;
  /** Whether this session holds the presence lock (a reconnect may find the old session still holding it). */
  private lockHeld = false;
  private lapseTimer: NodeJS.Timeout | undefined;
  /** serverIdentity() as of the last connection. */
  private server: string | undefined;

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
      const server = await q.serverIdentity(client);
      const before = this.server;
      await this.register(client);
      this.registered();
      // Told after registering, so that a worker whose row was lost with the failover has
      // already been revoked and registered anew.
      if (before !== undefined && server !== before) {
        log.warn({ before, now: server }, 'the database server changed (failover): reconciling, taking back held jobs that came back queued, sending recent outcomes again');
        this.options.onFailover?.(before, server);
      }
      this.server = server;
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
   * A reconnect keeps the incarnation whatever the lock's state: the old session may still hold
   * the lock until the server notices it is gone, and the heartbeats alone keep this worker
   * alive meanwhile (the lock is only the fast path of death). A missing row means the
   * incarnation was revoked (declared dead, its jobs taken back): everything held under it is
   * abandoned and a new one registered. A revoked id is never inserted again.
   */
  private async register(client: pg.Client): Promise<void> {
    if (this.id) {
      const sentAt = performance.now();
      if ((await q.heartbeat(client, this.id, this.options.inFlight(), this.options.cpu())) !== null) {
        this.acknowledged(sentAt);
        this.lockHeld = await q.tryLockWorkerPresence(client, workerLockKey(this.id));
        return;
      }
      this.revoke();
    }
    const o = this.options;
    const worker = { host: o.host, pid: o.pid, queues: o.queues, concurrency: o.concurrency, version: o.version };
    for (;;) {
      const id = drawWorkerId();
      // The lock first: an id whose lock key another worker's id folds to is drawn again.
      if (!(await q.tryLockWorkerPresence(client, workerLockKey(id)))) continue;
      const sentAt = performance.now();
      if (await q.insertWorker(client, { ...worker, id })) {
        this.id = id;
        this.lockHeld = true;
        this.acknowledged(sentAt);
        return;
      }
      await q.unlockWorkerPresence(client, workerLockKey(id));
    }
  }

  /**
   * The server answered the registration: a connection lost from here on is reconnected after
   * the first pause, not after the long one an outage built up. The database now holds a fresh
   * heartbeat from this worker and, should this connection drop, no lock: the rescuer counts it
   * dead unless it heartbeats again within the lock-loss window. Registrations that keep failing
   * within a heartbeat of each other still back off.
   */
  private registered(): void {
    const now = performance.now();
    if (now - this.registeredAt > this.options.heartbeatMs) this.failures = 0;
    this.registeredAt = now;
  }

  /** The incarnation is gone: tell the owner, who abandons what it held, and forget the id. */
  private revoke(): void {
    const old = this.id;
    this.id = undefined;
    this.lastAckedAt = -Infinity;
    this.options.logger.warn({ workerId: old }, 'this worker was declared dead; abandoning its jobs and registering anew');
    if (old) this.options.onRevoked?.(old);
  }

  private acknowledged(sentAt: number): void {
    this.lastAckedAt = Math.max(this.lastAckedAt, sentAt);
    const { liveness } = this.options;
    if (liveness && !this.closed) {
      clearTimeout(this.lapseTimer);
      // Timers fire late after a freeze, never early: a frozen worker learns of the lapse on waking.
      const leftMs = this.lastAckedAt + liveness.workerLeaseMs - liveness.marginMs - performance.now();
      this.lapseTimer = setTimeout(() => {
        if (!this.leaseValid) this.options.onLeaseLapsed?.();
      }, Math.max(0, leftMs) + 1);
      this.lapseTimer.unref();
    }
    this.options.onHeartbeat?.();
  }

  /**
   * Whether this worker may start jobs and claim: until the send time of its last acknowledged
   * heartbeat plus its lease, less a margin. Past that, the rescuer may already consider it dead.
   */
  get leaseValid(): boolean {
    const { liveness } = this.options;
    if (!liveness) return this.readyNow;
    return this.id !== undefined && performance.now() < this.lastAckedAt + liveness.workerLeaseMs - liveness.marginMs;
  }

  private async beat(client: pg.Client): Promise<void> {
    if (!this.id || this.client !== client || !this.readyNow) return;
    try {
      const sentAt = performance.now();
      const cancel = await q.heartbeat(client, this.id, this.options.inFlight(), this.options.cpu());
      if (cancel === null) {
        this.readyNow = false;
        this.revoke();
        await this.register(client);
        this.readyNow = true;
        this.options.logger.info({ workerId: this.id }, 'worker registered anew');
        this.options.onNotify('');
        return;
      }
      this.acknowledged(sentAt);
      if (!this.lockHeld) this.lockHeld = await q.tryLockWorkerPresence(client, workerLockKey(this.id));
      if (cancel.length > 0) this.options.onCancel(cancel);
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
    clearTimeout(this.lapseTimer);
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
