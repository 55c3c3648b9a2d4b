/**
 * Runs on a pool thread: keep one CPU busy for `workMs` milliseconds, as the original demo's
 * jobs did, so an autoscaler watching CPU sees real load.
 */
export default function burn({ workMs }: { workMs: number }): { burnedMs: number; rounds: number } {
  const start = performance.now();
  const end = start + workMs;
  let rounds = 0;
  let x = 0;
  while (performance.now() < end) {
    // Enough arithmetic per clock read that the loop is CPU work, not timer calls.
    for (let i = 0; i < 10_000; i++) x = (x * 1103515245 + 12345) % 2147483648;
    rounds++;
  }
  return { burnedMs: Math.round(performance.now() - start), rounds: x >= 0 ? rounds : 0 };
}
