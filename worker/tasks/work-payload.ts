import { PermanentError } from '../errors.ts';

/** Payload of the built-in tasks: how long to work, and how often to fail on purpose. */
export interface WorkPayload {
  /** Milliseconds of work. */
  workMs: number;
  /** Chance (0..1) that an attempt fails after its work, to exercise retries. */
  failRate: number;
}

const MAX_WORK_MS = 3_600_000;

/** Check a built-in task's payload; a bad one can never succeed, so it fails without retries. */
export function parseWorkPayload(payload: unknown): WorkPayload {
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) {
    throw new PermanentError(`payload: expected an object like {"workMs": 100}, got ${JSON.stringify(payload)}`);
  }
  const { workMs, failRate = 0 } = payload as Record<string, unknown>;
  if (typeof workMs !== 'number' || !Number.isFinite(workMs) || workMs < 0 || workMs > MAX_WORK_MS) {
    throw new PermanentError(`payload.workMs: expected a number of milliseconds from 0 to ${MAX_WORK_MS}, got ${JSON.stringify(workMs)}`);
  }
  if (typeof failRate !== 'number' || !(failRate >= 0 && failRate <= 1)) {
    throw new PermanentError(`payload.failRate: expected a number from 0 to 1, got ${JSON.stringify(failRate)}`);
  }
  return { workMs, failRate };
}

/** Fail on purpose with the payload's failRate. */
export function maybeFail(p: WorkPayload): void {
  if (p.failRate > 0 && Math.random() < p.failRate) {
    throw new Error(`failed on purpose (payload.failRate ${p.failRate})`);
  }
}
