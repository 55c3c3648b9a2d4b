/**
 * A reply gate around the loop's database operations: the real statement runs and commits, and
 * the test decides what the caller sees — the reply at once, the reply later, or a dropped
 * connection (the commit happened, the reply never came). The fault tests of ownership are
 * written with it.
 */
import type { LoopDatabase } from '../../worker/loop/database.ts';

type Operation = keyof LoopDatabase;

/** A reply held at the gate: the statement has run (and committed); its caller still waits. */
export interface HeldReply<T = unknown> {
  readonly operation: Operation;
  readonly args: readonly unknown[];
  /** What the database answered, or the error it raised. */
  readonly outcome: { ok: true; value: T } | { ok: false; error: unknown };
  /** Hand the reply to the caller. */
  release(): void;
  /** The caller sees the connection reset instead (its statement still committed). */
  drop(): void;
}

/** The error a dropped reply surfaces as, shaped like node-postgres's own. */
export function connectionReset(): Error {
  return Object.assign(new Error('Connection terminated unexpectedly (reply dropped by the test gate)'), { code: 'ECONNRESET' });
}

/** A statement whose caller already saw its connection reset; the server has not run it yet. */
export interface LateStatement {
  readonly operation: Operation;
  readonly args: readonly unknown[];
  /** Run it now, as a server does that got the statement before the connection broke; its reply goes nowhere. */
  commit(): Promise<unknown>;
}

export class ReplyGate {
  /** The operations whose next calls are held, and how many of them. */
  private readonly holding = new Map<Operation, number>();
  /** The operations whose next call fails at once on the caller's side and runs later. */
  private readonly delaying = new Map<Operation, number>();
  private readonly late: LateStatement[] = [];
  private readonly held: HeldReply[] = [];
  private readonly waiters: (() => void)[] = [];
  /** Every call that went through, in order. */
  readonly calls: { operation: Operation; args: readonly unknown[] }[] = [];
  readonly db: LoopDatabase;

  constructor(private readonly inner: LoopDatabase) {
    const wrap = <K extends Operation>(operation: K) =>
      ((...args: unknown[]) => this.pass(operation, args)) as LoopDatabase[K];
    this.db = {
      settleAndClaim: wrap('settleAndClaim'),
      retry: wrap('retry'),
      finish: wrap('finish'),
      handBack: wrap('handBack'),
      reconcile: wrap('reconcile'),
      answerUnrecorded: wrap('answerUnrecorded'),
      reclaimRuns: wrap('reclaimRuns'),
      setProgress: wrap('setProgress'),
    };
  }

  /** Hold the replies of the next `count` calls of `operation`. */
  hold(operation: Operation, count = 1): void {
    this.holding.set(operation, (this.holding.get(operation) ?? 0) + count);
  }

  /**
   * The next call of `operation` fails at once, as if its connection reset, while the statement
   * waits to run until the test commits it: a claim that commits after its client gave up.
   */
  delay(operation: Operation): void {
    this.delaying.set(operation, (this.delaying.get(operation) ?? 0) + 1);
  }

  /** The delayed statements not committed yet, oldest first. */
  get delayed(): readonly LateStatement[] {
    return this.late;
  }

  /** The replies held now, oldest first. */
  get waiting(): readonly HeldReply[] {
    return this.held;
  }

  /** Resolves with the `n`th held reply (1-based) once it has arrived at the gate. */
  async nextHeld(n = 1): Promise<HeldReply> {
    while (this.held.length < n) await new Promise<void>((resolve) => this.waiters.push(resolve));
    return this.held[n - 1]!;
  }

  private async pass(operation: Operation, args: unknown[]): Promise<unknown> {
    this.calls.push({ operation, args });
    const fn = this.inner[operation] as (...a: unknown[]) => Promise<unknown>;
    const delays = this.delaying.get(operation) ?? 0;
    if (delays > 0) {
      this.delaying.set(operation, delays - 1);
      const statement: LateStatement = {
        operation,
        args,
        commit: () => {
          this.late.splice(this.late.indexOf(statement), 1);
          return fn(...args);
        },
      };
      this.late.push(statement);
      throw connectionReset();
    }
    const count = this.holding.get(operation) ?? 0;
    if (count === 0) return fn(...args);
    this.holding.set(operation, count - 1);
    let outcome: HeldReply['outcome'];
    try {
      outcome = { ok: true, value: await fn(...args) };
    } catch (error) {
      outcome = { ok: false, error };
    }
    return new Promise((resolve, reject) => {
      const reply: HeldReply = {
        operation,
        args,
        outcome,
        release: () => {
          this.remove(reply);
          if (outcome.ok) resolve(outcome.value);
          else reject(outcome.error);
        },
        drop: () => {
          this.remove(reply);
          reject(connectionReset());
        },
      };
      this.held.push(reply);
      for (const wake of this.waiters.splice(0)) wake();
    });
  }

  private remove(reply: HeldReply): void {
    const i = this.held.indexOf(reply);
    if (i >= 0) this.held.splice(i, 1);
  }
}
