/**
 * The one small interface every queue under test implements, so each scenario is written once
 * and runs the same way against ours and the peers.
 */
import type { WorkerChild } from '../lib/proc.ts';
import type { BenchPayload } from '../workers/protocol.ts';

export const SYSTEM_NAMES = ['pgqueue', 'graphile-worker', 'pg-boss'] as const;
export type SystemName = (typeof SYSTEM_NAMES)[number];

/** Anything that runs a query (a pg.Client from either copy of node-postgres). */
export interface Db {
  query<R extends Record<string, unknown> = Record<string, unknown>>(text: string, values?: unknown[]): Promise<{ rows: R[] }>;
}

/** Enqueueing through the system's own client API. */
export interface Enqueuer {
  /** One job, one call: the system's single-job API. */
  one(payload: BenchPayload): Promise<void>;
  /** Many jobs, one call: the system's batch API. */
  many(payloads: BenchPayload[]): Promise<void>;
  close(): Promise<void>;
}

/** How a worker process is configured: the tuned setup, or no settings at all. */
export type WorkerMode = 'tuned' | 'default';

export interface QueueSystem {
  readonly name: SystemName;
  /** Package version under test. */
  readonly version: string;
  /** The configuration of the throughput and latency scenarios, in words. */
  readonly tunedDescription: string;
  /** What "default settings" means for the crash scenario, in words. */
  readonly defaultDescription: string;
  /** Install the system's schema (and queue) into an empty database. */
  install(url: string): Promise<void>;
  /** An enqueueing client with a pool of `connections`. */
  enqueuer(url: string, connections: number): Promise<Enqueuer>;
  /**
   * The same, with the caller's pg.Pool made by a copy of node-postgres other than the one the
   * system imports, as an application with its own copy would hand it in. Only for a system
   * that takes the caller's pool and treats one differently by where it came from.
   */
  enqueuerOtherPg?(url: string, connections: number): Promise<Enqueuer>;
  /** Start a worker process on `url`. */
  startWorker(url: string, mode: WorkerMode, label: string): WorkerChild;
  /** Resolve once the worker takes jobs. */
  waitReady(db: Db, worker: WorkerChild, timeoutMs: number): Promise<void>;
  /** Jobs enqueued and not yet started (after an enqueue scenario). */
  countWaiting(db: Db): Promise<number>;
  /** True when no job is waiting or running (completions recorded). */
  drained(db: Db): Promise<boolean>;
  /** After `n` no-op jobs drained: what the database says is wrong (empty when all is well). */
  verifyDrained(db: Db, n: number): Promise<string[]>;
}
