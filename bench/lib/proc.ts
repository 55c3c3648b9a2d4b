/**
 * Worker processes as the runner sees them: spawned directly as `node <compiled entry>` (so the
 * pid is the worker itself, for SIGKILL and /proc/<pid>), with an IPC channel for progress and
 * reports, and their memory read from /proc.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ChildMessage, ParentMessage, WorkerReport } from '../workers/protocol.ts';

/** The repository root. */
export const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
/** The bench directory. */
export const benchDir = path.join(repoRoot, 'bench');

const live = new Set<ChildProcess>();

/** A worker process started by the runner. */
export class WorkerChild {
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Jobs handled so far, as last reported. */
  handled = 0;
  private output = '';
  private readonly listeners = new Set<(m: ChildMessage) => void>();
  /**
   * Every 'ready' and 'started' message so far: waitForMessage() looks here first, so a message
   * that arrived before anyone waited for it (a job started within a millisecond of being
   * enqueued) is not missed.
   */
  private readonly seen: ChildMessage[] = [];

  constructor(
    readonly label: string,
    entry: string,
    env: Record<string, string>,
    /**
     * Flags for node itself. BENCH_WORKER_NODE_ARGS (space-separated) sets them for every worker
     * process, to profile by hand: BENCH_WORKER_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof".
     */
    nodeArgs: readonly string[] = (process.env.BENCH_WORKER_NODE_ARGS ?? '').split(' ').filter((a) => a !== ''),
  ) {
    this.child = spawn(process.execPath, [...nodeArgs, entry], {
      cwd: repoRoot,
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    });
    live.add(this.child);
    const keep = (d: Buffer) => {
      // The last few KB are enough to say why a worker died; more would only use memory.
      this.output = (this.output + d.toString()).slice(-8_000);
    };
    this.child.stdout!.on('data', keep);
    this.child.stderr!.on('data', keep);
    this.child.on('message', (m: ChildMessage) => {
      if (m.type === 'progress') this.handled = m.handled;
      if (m.type === 'ready' || m.type === 'started') this.seen.push(m);
      for (const l of this.listeners) l(m);
    });
    this.exited = new Promise((resolve) =>
      this.child.on('exit', (code, signal) => {
        live.delete(this.child);
        resolve({ code, signal });
      }),
    );
  }

  get pid(): number {
    return this.child.pid!;
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** The tail of its stdout and stderr, for error messages. */
  tail(): string {
    return this.output.trim().split('\n').slice(-12).join('\n');
  }

  /** The first message, already received or still to come, that `match` accepts. */
  waitForMessage<T>(match: (m: ChildMessage) => T | undefined, timeoutMs: number, what: string): Promise<T> {
    for (const m of this.seen) {
      const value = match(m);
      if (value !== undefined) return Promise.resolve(value);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.listeners.delete(listener);
        reject(new Error(`${this.label}: no ${what} within ${timeoutMs} ms${this.tail() ? `; output:\n${this.tail()}` : ''}`));
      }, timeoutMs);
      const listener = (m: ChildMessage) => {
        const value = match(m);
        if (value === undefined) return;
        clearTimeout(timer);
        this.listeners.delete(listener);
        resolve(value);
      };
      this.listeners.add(listener);
      void this.exited.then(({ code, signal }) => {
        if (!this.listeners.has(listener)) return;
        clearTimeout(timer);
        this.listeners.delete(listener);
        reject(new Error(`${this.label} exited (${signal ?? code}) before ${what}${this.tail() ? `; output:\n${this.tail()}` : ''}`));
      });
    });
  }

  /** Ask for what it handled. */
  report(timeoutMs = 15_000): Promise<WorkerReport> {
    const message: ParentMessage = { type: 'report' };
    const answer = this.waitForMessage((m) => (m.type === 'report' ? m : undefined), timeoutMs, 'report');
    this.child.send(message);
    return answer;
  }

  /** SIGTERM, then SIGKILL if it has not exited within `graceMs`. */
  async stop(graceMs = 30_000): Promise<void> {
    if (!this.alive) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  /** SIGKILL and wait for the exit. */
  async kill(): Promise<void> {
    if (!this.alive) return;
    this.child.kill('SIGKILL');
    await this.exited;
  }
}

/** Kill every worker process still running (on error or Ctrl-C), by its pid. */
export function killAll(): void {
  for (const child of live) child.kill('SIGKILL');
  live.clear();
}

/** Resident memory of a process from /proc/<pid>/status, in MB: now (VmRSS) and peak (VmHWM). */
export function memoryOf(pid: number): { rssMb: number; peakMb: number } | null {
  let status: string;
  try {
    status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return null;
  }
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? Number.NaN);
  return { rssMb: kb('VmRSS') / 1024, peakMb: kb('VmHWM') / 1024 };
}

/** Poll `check` every `everyMs` until it returns a value other than undefined/false/null. */
export async function waitFor<T>(
  check: () => Promise<T | undefined | null | false> | T | undefined | null | false,
  what: string,
  timeoutMs: number,
  everyMs = 25,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== null && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
