/**
 * Advisory lock keys. Every lock of the queue uses the two-key form with this class, so it
 * cannot collide with an application's own single-key advisory locks.
 */
export const ADVISORY_CLASS = 748201;
/** Held by a migration run. Worker ids start at 1, so 0 is free for this. */
export const MIGRATION_LOCK = 0;
/** Taken per transaction by the maintenance pass so only one process runs it at a time. */
export const MAINTENANCE_LOCK = -1;
/** Worker presence keys are the worker's id folded into int4. */
export function workerLockKey(workerId: bigint | number | string): number {
  return Number(BigInt(workerId) % 2147483647n);
}
