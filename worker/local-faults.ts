import type { Clock } from './clock.ts';
import type { Logger } from './logger.ts';

/** Where the loop and the recorder report how their statements end. */
export interface StatementHealth {
  succeeded(): void;
  failed(): void;
}

/**
 * Tells a fault of this worker from a fault of the database, for /healthz. The pool's
 * statements (claims, records) failing for `stallMs` while the presence connection's heartbeats
 * still get through is this worker's own problem — a wedged settle, a dead pool — and a new VM
 * may fix it. When the heartbeats fail too, the database is away for every worker alike, and
 * autohealing must not recreate the fleet for it.
 */
export class LocalFaults implements StatementHealth {
  private failingSince: number | undefined;
  private lastHeartbeatAt = -Infinity;
  private reported: string | undefined;

  /** `heartbeatMs`: how often the presence heartbeats, so how recent "the database answers" can be. */
  constructor(private readonly options: { stallMs: number; heartbeatMs: number; clock: Clock; logger: Logger }) {}

  succeeded(): void {
    this.failingSince = undefined;
  }

  failed(): void {
    this.failingSince ??= this.options.clock.now();
  }

  heartbeatSucceeded(): void {
    this.lastHeartbeatAt = this.options.clock.now();
  }

  /** Why this worker is unhealthy, or undefined. The first time a reason appears or goes, it is logged. */
  fault(): string | undefined {
    const now = this.options.clock.now();
    const { stallMs } = this.options;
    const failingMs = this.failingSince === undefined ? 0 : now - this.failingSince;
    const databaseAnswers = now - this.lastHeartbeatAt <= 2 * this.options.heartbeatMs + 1_000;
    const fault =
      failingMs >= stallMs && databaseAnswers
        ? `the worker's database statements have failed for ${Math.round(failingMs / 1000)} s while its heartbeats get through`
        : undefined;
    if (fault && !this.reported) this.options.logger.error({ failingMs }, `unhealthy: ${fault}`);
    if (!fault && this.reported) this.options.logger.info('healthy again: database statements succeed');
    this.reported = fault;
    return fault;
  }
}
