/**
 * The worker processes of a chaos run, under a supervisor that starts a new one whenever one
 * exits, as the MIG's autohealing or a container restart policy would. Each process is started
 * with exactly the command and environment a VM gives the container. Every exit is recorded, and
 * whether the run caused it: a worker that dies on its own fails the run.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = fileURLToPath(new URL('..', import.meta.url));

/** What the chaos mix makes the workers log whatever the faults do. */
const BY_DESIGN = new Set(['job failed for good', 'job result refused by the database; the job fails']);

export interface LogLine {
  readonly at: number;
  readonly severity: string;
  readonly message: string;
  readonly pid: number;
}

export interface Exit {
  readonly pid: number;
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  /** The run killed or stopped it. */
  readonly meant: boolean;
  readonly stderr: string;
}

export interface Member {
  readonly slot: number;
  readonly child: ChildProcess;
  readonly pid: number;
  /** The source tree it runs (this one, or an older release's). */
  readonly tree: string;
  meant: boolean;
  readonly exited: Promise<Exit>;
}

export class Fleet {
  private readonly live = new Map<number, Member>();
  private stopping = false;
  readonly exits: Exit[] = [];
  readonly logs: LogLine[] = [];
  /** Jobs a worker reported as started again after a failover lost their record (by job id). */
  readonly reportedAgain = new Set<string>();
  /** A worker reported that a failover lost more than it remembers (no ids then). */
  lossPastMemory = false;
  /** How often each worker reported each job after a failover: a few passes at most, or it is a loop. */
  readonly failoverReports = new Map<string, number>();
  private extraSlot = 100;

  constructor(
    private readonly env: Record<string, string>,
    readonly size: number,
  ) {}

  start(): void {
    for (let slot = 0; slot < this.size; slot++) this.spawn(slot, root, true);
  }

  members(): Member[] {
    return [...this.live.values()];
  }

  /** A live member of this tree, chosen by `random`. */
  pick(random: () => number, tree = root): Member {
    const candidates = this.members().filter((m) => m.tree === tree);
    if (candidates.length === 0) throw new Error('no live worker to pick');
    return candidates[Math.floor(random() * candidates.length)]!;
  }

  /** Signal a member on purpose; SIGKILL and SIGTERM end it, and the supervisor replaces it. */
  signal(member: Member, signal: NodeJS.Signals): void {
    if (signal === 'SIGKILL' || signal === 'SIGTERM') member.meant = true;
    member.child.kill(signal);
  }

  /** One more process, from another release's tree, not replaced when it exits. */
  spawnExtra(tree: string): Member {
    return this.spawn(this.extraSlot++, tree, false);
  }

  /** SIGTERM everyone and wait for them; nobody is replaced any more. */
  async stop(): Promise<void> {
    this.stopping = true;
    const all = this.members();
    for (const m of all) this.signal(m, 'SIGTERM');
    await Promise.all(all.map((m) => m.exited));
  }

  /**
   * Warnings and errors the workers logged in [from, to), counted by message, less those the
   * job mix causes by design (jobs failing on purpose, poison results).
   */
  logged(from: number, to: number): Map<string, number> {
    const counts = new Map<string, number>();
    for (const l of this.logs) {
      if (l.at < from || l.at >= to || BY_DESIGN.has(l.message)) continue;
      counts.set(l.message, (counts.get(l.message) ?? 0) + 1);
    }
    return counts;
  }

  private spawn(slot: number, tree: string, replace: boolean): Member {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(tree, 'worker/main.ts')], {
      cwd: tree,
      env: { PATH: process.env.PATH ?? '', ...this.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    let partial = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      const lines = (partial + chunk.toString()).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) this.keep(line, child.pid ?? 0);
    });
    child.stderr!.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-4_000)));
    const member: Member = {
      slot,
      child,
      pid: child.pid ?? 0,
      tree,
      meant: false,
      exited: new Promise((resolve) =>
        child.on('exit', (code, signal) => {
          this.live.delete(child.pid ?? 0);
          const exit = { pid: child.pid ?? 0, code, signal, meant: member.meant || this.stopping, stderr };
          this.exits.push(exit);
          resolve(exit);
          if (replace && !this.stopping) setTimeout(() => !this.stopping && this.spawn(slot, tree, true), 500);
        }),
      ),
    };
    this.live.set(member.pid, member);
    return member;
  }

  private keep(line: string, pid: number): void {
    if (!line.startsWith('{')) return;
    try {
      const entry = JSON.parse(line) as { severity?: string; message?: string; time?: string; jobs?: unknown };
      const message = entry.message ?? '';
      if (message.includes('lost window let them start again') && Array.isArray(entry.jobs)) for (const id of entry.jobs) this.reportedAgain.add(String(id));
      if (message.includes('the lost window reaches further back')) this.lossPastMemory = true;
      if (message.startsWith('after the failover') && Array.isArray(entry.jobs)) {
        for (const id of entry.jobs) {
          const key = `${pid}/${String(id)}`;
          this.failoverReports.set(key, (this.failoverReports.get(key) ?? 0) + 1);
        }
      }
      if (entry.severity !== 'WARNING' && entry.severity !== 'ERROR' && entry.severity !== 'CRITICAL') return;
      this.logs.push({ at: entry.time ? Date.parse(entry.time) : Date.now(), severity: entry.severity, message: entry.message ?? '', pid });
    } catch {
      // Not a log line of ours.
    }
  }
}
