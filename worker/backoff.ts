/** How long to wait before the next try: the one backoff of the queue. */
export interface BackoffOptions {
  /** The wait before the second try (attempt 1). */
  readonly baseMs: number;
  /** The longest wait. */
  readonly maxMs: number;
  /**
   * With a source of randomness, the wait is a random 50-100 % of the exponential figure, so many
   * clients that failed together do not come back together.
   */
  readonly random?: () => number;
}

/** Exponential backoff: `baseMs × 2^(attempt − 1)`, capped at `maxMs`, then jittered if asked. */
export function backoffMs(attempt: number, options: BackoffOptions): number {
  const exponent = Math.min(Math.max(attempt, 1) - 1, 40);
  const ceiling = Math.min(options.maxMs, options.baseMs * 2 ** exponent);
  if (!options.random) return ceiling;
  return Math.round(ceiling * (0.5 + options.random() / 2));
}
