/**
 * Read-only views of a queue for operators and tools (`observe`, the local demo, the bench):
 * counts, rates, latencies and live workers, each one statement. Scripts reach the database
 * through this module and `index.ts`, never through the SQL files.
 */
export { countByState, latencySince, listWorkers, queueDepth, snapshot, type Snapshot, type WorkerRow } from './sql/stats.ts';
