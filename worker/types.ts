/** Every state a job can be in. `queued` includes retries waiting for their run-after time. */
export const JOB_STATES = ['queued', 'running', 'succeeded', 'failed', 'expired', 'cancelled'] as const;
export type JobState = (typeof JOB_STATES)[number];

export const DELIVERIES = ['at_least_once', 'at_most_once'] as const;
/**
 * `at_least_once`: a job whose worker died is run again (the handler must tolerate a rerun).
 * `at_most_once`: a job whose worker died, or that threw, is marked failed and never run again.
 */
export type Delivery = (typeof DELIVERIES)[number];

/** What to run, and how. Only `task` is required. */
export interface JobSpec {
  /** Name of the task handler, e.g. `burn`. */
  task: string;
  /** Any JSON value; it reaches the handler as is. */
  payload?: unknown;
  /** Queue name (default `default`); workers can be limited to some queues. */
  queue?: string;
  /** Higher runs first (default 0). */
  priority?: number;
  /** Do not start before this time (default now). */
  runAfter?: Date;
  /** Do not start after this time: the job ends `expired` instead. */
  expiresAt?: Date;
  /** Runs allowed before the job ends `failed` (default 5; at-most-once jobs: 1). */
  maxAttempts?: number;
  /** Default `at_least_once`. */
  delivery?: Delivery;
  /** Enqueueing the same key again returns the existing job while it exists (live or retained). */
  idempotencyKey?: string;
}

/** A job as stored, live or finished. Ids are strings: Postgres bigints do not fit a JS number. */
export interface Job {
  id: string;
  queue: string;
  task: string;
  payload: unknown;
  priority: number;
  state: JobState;
  attempts: number;
  maxAttempts: number;
  delivery: Delivery;
  idempotencyKey: string | null;
  result: unknown;
  error: string | null;
  progress: unknown;
  workerId: string | null;
  createdAt: Date;
  runAfter: Date;
  startedAt: Date | null;
  finishedAt: Date | null;
}

/** A job as handed to a worker by a claim. */
export interface ClaimedJob {
  id: string;
  queue: string;
  task: string;
  payload: unknown;
  priority: number;
  /** This run's number, starting at 1. */
  attempt: number;
  maxAttempts: number;
  delivery: Delivery;
  createdAt: Date;
  runAfter: Date;
  startedAt: Date;
  expiresAt: Date | null;
  /** The payload's size as Postgres stores it (compressed when large): what the prefetch bounds. */
  payloadBytes: number;
  /** The number of the claim that handed out this run, under the worker's incarnation. */
  claimSeq: number;
  /**
   * This run's fencing token, `<worker incarnation>:<claim number>`: unique per run of any job,
   * and what every statement that changes the job matches. A handler can key its own side
   * effects on it (with the job id) to make them idempotent.
   */
  token: string;
}

/** The result of enqueueing one job. */
export interface EnqueueResult {
  id: string;
  /** False when an idempotency key matched a job that already existed. */
  created: boolean;
}
