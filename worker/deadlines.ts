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

export function deadlinesFor(options: { statementTimeoutMs: number; leaseMs: number }): Deadlines {
  return {
    run: withMargin(options.statementTimeoutMs),
    presence: withMargin(Math.min(5_000, Math.max(250, Math.round(options.leaseMs / 4))), 250),
    maintenance: withMargin(Math.max(30_000, options.statementTimeoutMs)),
  };
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
