import { setTimeout as delay } from 'node:timers/promises';
import type { TaskHandler } from './types.ts';
import { maybeFail, parseWorkPayload } from './work-payload.ts';

// Same extension as this module: .ts under tsx, .js once built.
const burnThread = new URL(`./burn-thread${import.meta.url.slice(import.meta.url.lastIndexOf('.'))}`, import.meta.url);

/** `burn`: keep a CPU busy for payload.workMs on the thread pool. */
export const burn: TaskHandler = async (payload, ctx) => {
  const p = parseWorkPayload(payload);
  const result = await ctx.runOnThread<{ burnedMs: number }>(burnThread, { workMs: p.workMs });
  maybeFail(p);
  return { burnedMs: result.burnedMs };
};

/** `sleep`: wait payload.workMs without using CPU (I/O-bound work). */
export const sleep: TaskHandler = async (payload, ctx) => {
  const p = parseWorkPayload(payload);
  await delay(p.workMs, undefined, { signal: ctx.signal });
  maybeFail(p);
  return { sleptMs: p.workMs };
};

/** The tasks every worker knows. */
export const builtinTasks: ReadonlyMap<string, TaskHandler> = new Map([
  ['burn', burn],
  ['sleep', sleep],
]);
