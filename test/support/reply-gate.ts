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

export class ReplyGate {
  /** The operations whose next calls are held, and how many of them. */
  private readonly holding = new Map<Operation, number>();
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
      releaseUnheld: wrap('releaseUnheld'),
      setProgress: wrap('setProgress'),
      recordedBy: wrap('recordedBy'),
    };
  }

  /** Hold the replies of the next `count` calls of `operation`. */
  hold(operation: Operation, count = 1): void {
    this.holding.set(operation, (this.holding.get(operation) ?? 0) + count);
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
