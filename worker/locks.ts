/**
 * Advisory lock keys. Every lock of the queue uses the two-key form with this class, so it
 * cannot collide with an application's own single-key advisory locks.
 */
export const ADVISORY_CLASS = 748201;
/** Held by a migration run. No worker id folds to 0 (drawWorkerId), so this key is free. */
export const MIGRATION_LOCK = 0;
/** Taken per transaction by the maintenance pass so only one process runs it at a time. */
export const MAINTENANCE_LOCK = -1;
/** Worker presence keys are the worker's id folded into int4. */
export function workerLockKey(workerId: bigint | number | string): number {
  return Number(BigInt(workerId) % 2147483647n);
}

/**
 * A new worker incarnation's id: random, drawn by the worker. Never a sequence value: after a
 * failover that lost commits a sequence hands out numbers again, and an id seen before would
 * inherit what the database still holds under it.
 */
export function drawWorkerId(): string {
  for (;;) {
    const [n] = crypto.getRandomValues(new BigUint64Array(1));
    const id = n! >> 1n;
    if (id > 0n && workerLockKey(id) !== MIGRATION_LOCK) return id.toString();
  }
}
