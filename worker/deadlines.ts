/**
 * Every statement the worker sends has a deadline, in classes that fit the work. The server's
 * statement_timeout is the shorter one, so a slow statement comes back cancelled (and rolled
 * back) before the client gives up on it; the client's own deadline catches what the server
 * cannot report: a connection that went silent. The per-session network settings make the
 * server drop the session of a VM that vanished within seconds, which node alone cannot do
 * (it sets the keepalive start, not the probe interval or count).
 */

export interface DeadlineClass {
  /** Server-side statement_timeout. */
  readonly statementMs: number;
  /** Client-side deadline (node-postgres query_timeout): the statement timeout and a margin. */
  readonly clientMs: number;
}

export interface Deadlines {
  /** The pool's sessions: claims, settles, outcome records, hand-backs, progress, stats. */
  readonly run: DeadlineClass;
  /** The presence session: register, LISTEN, heartbeats. Short: a stuck one must reconnect within the lease. */
  readonly presence: DeadlineClass;
  /** Each maintenance step (set per transaction). */
  readonly maintenance: DeadlineClass;
}

function withMargin(statementMs: number, minMarginMs = 1_000): DeadlineClass {
  return { statementMs, clientMs: statementMs + Math.max(minMarginMs, Math.round(statementMs / 2)) };
}

const clamp = (value: number, min: number, max: number) => Math.min(max, Math.max(min, Math.round(value)));

export function deadlinesFor(options: { statementTimeoutMs: number; leaseMs: number }): Deadlines {
  return {
    run: withMargin(options.statementTimeoutMs),
    presence: withMargin(clamp(options.leaseMs / 15, 250, 1_000), 250),
    maintenance: withMargin(Math.max(30_000, options.statementTimeoutMs)),
  };
}

/** How a worker proves it is alive, and how soon others may conclude it is not. */
export interface Liveness {
  /** Time between heartbeats. */
  readonly heartbeatMs: number;
  /**
   * G: how long after sending its last acknowledged heartbeat a worker may still start jobs,
   * less `marginMs` (heartbeat interval + heartbeat deadline + margin). Shorter than the lease.
   */
  readonly workerLeaseMs: number;
  readonly marginMs: number;
  /** The rescuer counts a lost presence lock as death once the heartbeat is this old: G and the margin again. */
  readonly lockLossMs: number;
}

export function livenessFor(options: { leaseMs: number; statementTimeoutMs: number }): Liveness {
  const heartbeatMs = clamp(options.leaseMs / 15, 100, 1_000);
  const marginMs = clamp(options.leaseMs / 30, 50, 500);
  const workerLeaseMs = heartbeatMs + deadlinesFor(options).presence.clientMs + marginMs;
  return { heartbeatMs, workerLeaseMs, marginMs, lockLossMs: workerLeaseMs + marginMs };
}

/** What every worker session sets after it connects, with its class's statement timeout. */
export function sessionSettings(deadline: DeadlineClass): Record<string, string> {
  return {
    statement_timeout: String(deadline.statementMs),
    // A worker frozen inside a transaction must not hold its locks for long.
    idle_in_transaction_session_timeout: '30000',
    // The server looks for a vanished client while a statement runs, and probes idle sessions.
    client_connection_check_interval: '2000',
    tcp_keepalives_idle: '5',
    tcp_keepalives_interval: '2',
    tcp_keepalives_count: '3',
    tcp_user_timeout: '10000',
  };
}
