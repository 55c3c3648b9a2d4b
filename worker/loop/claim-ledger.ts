import type { Clock } from '../clock.ts';
import type { ReconcileRequest } from './database.ts';

export interface ClaimLedgerOptions {
  /**
   * How long a failed claim may still commit after its client gave up: its number is sent with
   * every reconciliation until then (a lease plus the statement timeout).
   */
  readonly failedWindowMs: number;
  /** While failed claims are in the window, how often to reconcile again. */
  readonly lookAgainMs: number;
  /** Reconcile at least this often whatever happened (once per lease): the backstop for lost commits. */
  readonly backstopMs: number;
}

/**
 * The worker's claims by number, under its current incarnation. Claims travel pipelined on
 * several connections while heartbeats travel on another, so when the worker reconciles, a claim
 * that committed may still be on the wire. The ledger gives the low-water mark (every claim up
 * to it has had its reply or been declared failed) and the failed claims: only those are judged.
 * Numbers rise for the life of the process, across incarnations.
 * A claim's promise ends once, so a reply can never arrive for a claim already declared failed.
 */
export class ClaimLedger {
  private next = 1;
  private readonly inFlight = new Set<number>();
  /** Failed claims and when they failed. */
  private readonly failed = new Map<number, number>();
  private due = false;
  private lastLookAt: number;

  constructor(
    private readonly clock: Clock,
    private readonly options: ClaimLedgerOptions,
  ) {
    this.lastLookAt = clock.now();
  }

  /** Number a claim about to be sent. */
  begin(): number {
    const seq = this.next++;
    this.inFlight.add(seq);
    return seq;
  }

  /** The claim's reply arrived. */
  resolved(seq: number): void {
    this.inFlight.delete(seq);
  }

  /** The claim failed without a reply: whatever it took may be waiting on the server. */
  failedClaim(seq: number): void {
    this.inFlight.delete(seq);
    this.failed.set(seq, this.clock.now());
    this.due = true;
  }

  /** Something happened that calls for a reconciliation before the next claim. */
  force(): void {
    this.due = true;
  }

  /** Whether the loop should reconcile before it claims again. */
  get wanted(): boolean {
    const since = this.clock.now() - this.lastLookAt;
    return this.due || (this.failed.size > 0 && since >= this.options.lookAgainMs) || since >= this.options.backstopMs;
  }

  /** What to send: the low-water mark and the failed claims still in their window. */
  request(held: readonly string[]): ReconcileRequest {
    const now = this.clock.now();
    for (const [seq, at] of this.failed) if (now - at > this.options.failedWindowMs) this.failed.delete(seq);
    const lowWater = this.inFlight.size === 0 ? this.next - 1 : Math.min(...this.inFlight) - 1;
    return { lowWater, failedClaims: [...this.failed.keys()], held };
  }

  /** A reconciliation went through. */
  looked(): void {
    this.due = false;
    this.lastLookAt = this.clock.now();
  }

  /**
   * A new incarnation: the old one's failed claims are nobody's to judge now (the rescuer took
   * what they held). Numbers go on rising: a claim of the old incarnation still on the wire
   * must not be mistaken for one of the new.
   */
  newIncarnation(): void {
    this.failed.clear();
  }
}
