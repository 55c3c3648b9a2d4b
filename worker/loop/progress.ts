import type { Clock } from '../clock.ts';

const PROGRESS_INTERVAL_MS = 250;

/**
 * A running job's progress reports, coalesced: handlers may report on every step, the database
 * sees a few writes a second, and the last value is written before the run is recorded.
 */
export class ProgressReporter {
  private value: unknown;
  /** A value was reported since the last write started. */
  private dirty = false;
  private cancelTimer: (() => void) | undefined;
  private writing: Promise<void> | undefined;
  private closed = false;

  constructor(
    private readonly write: (value: unknown) => Promise<unknown>,
    private readonly onError: (error: unknown) => void,
    private readonly clock: Clock,
  ) {}

  report(value: unknown): void {
    if (this.closed) return;
    this.value = value;
    this.dirty = true;
    this.schedule();
  }

  /** Stop reporting: the run was abandoned. */
  close(): void {
    this.closed = true;
    this.cancelTimer?.();
    this.cancelTimer = undefined;
  }

  /** Write the last value now (after any write in flight). */
  async flush(): Promise<void> {
    while (this.writing) await this.writing;
    this.cancelTimer?.();
    this.cancelTimer = undefined;
    if (this.dirty) await this.writeNow();
    this.close();
  }

  private schedule(): void {
    if (this.closed || this.cancelTimer || this.writing) return;
    this.cancelTimer = this.clock.setTimer(() => {
      this.cancelTimer = undefined;
      void this.writeNow();
    }, PROGRESS_INTERVAL_MS);
  }

  private async writeNow(): Promise<void> {
    if (this.closed) return;
    this.dirty = false;
    this.writing = this.write(this.value).then(
      () => {},
      (error: unknown) => this.onError(error),
    );
    await this.writing;
    this.writing = undefined;
    // A value reported while the write was on the wire goes in the next one.
    if (this.dirty) this.schedule();
  }
}
