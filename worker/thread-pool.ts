import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';

/** Threads for CPU-bound task code, created on first use so an idle worker stays small. */
export class ThreadPool {
  private pool: Piscina | undefined;

  constructor(private readonly threads: number) {}

  /** Run `exportName` of `module` on a thread; the signal aborts it (the thread is replaced). */
  run<T>(module: string | URL, payload: unknown, exportName: string, signal: AbortSignal): Promise<T> {
    const filename = module instanceof URL || module.startsWith('file:') ? fileURLToPath(module) : module;
    this.pool ??= new Piscina({
      maxThreads: this.threads,
      minThreads: 0,
      idleTimeout: 30_000,
      // A thread only ever runs one task at a time: two on one thread would share one CPU.
      concurrentTasksPerWorker: 1,
    });
    return this.pool.run(payload, { filename, name: exportName, signal }) as Promise<T>;
  }

  async close(): Promise<void> {
    await this.pool?.close({ force: true });
  }
}
