import type { Clock } from '../clock.ts';

/** While a failed claim may still commit, how often to look again for what it took. */
const LOOK_AGAIN_EVERY_MS = 2_000;

/**
 * What a claim that failed without a reply may have left: jobs the server marked running for
 * this worker although the worker never heard of them. Right after such a failure, and now and
 * then while the claim could still commit (a statement can finish after its client gave up),
 * the loop gives back every job the database says this worker runs but it does not hold.
 */
export class ClaimDoubt {
  private due = false;
  private until = Number.NEGATIVE_INFINITY;
  private nextAt = 0;

  constructor(
    private readonly clock: Clock,
    /** How long after a failed claim it may still commit. */
    private readonly windowMs: number,
  ) {}

  /** A claim failed without a reply. */
  claimFailed(): void {
    this.due = true;
    this.until = this.clock.now() + this.windowMs;
  }

  /** Whether the loop should look for lost claims before its next claim. */
  get wanted(): boolean {
    const now = this.clock.now();
    return this.due || (now < this.until && now >= this.nextAt);
  }

  /** A look went through. */
  looked(): void {
    this.due = false;
    this.nextAt = this.clock.now() + LOOK_AGAIN_EVERY_MS;
  }
}
