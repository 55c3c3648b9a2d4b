import type { Clock } from '../clock.ts';

/**
 * The loop's wait: the poll interval, cut short by a nudge (a job ended, a round trip returned,
 * a notification). A nudge that comes while the loop is busy is kept, so the next wait returns
 * at once instead of sleeping through it.
 */
export class Waker {
  private woken = false;
  private resolveWait: (() => void) | undefined;

  constructor(private readonly clock: Clock) {}

  nudge(): void {
    this.woken = true;
    this.resolveWait?.();
  }

  /** Resolves true when nudged (or `cut` holds), false when `ms` passed. */
  wait(ms: number, cut = false): Promise<boolean> {
    if (this.woken || cut) {
      this.woken = false;
      return Promise.resolve(true);
    }
    return new Promise((resolve) => {
      const cancel = this.clock.setTimer(() => done(false), ms);
      const done = (woken: boolean) => {
        cancel();
        this.resolveWait = undefined;
        this.woken = false;
        resolve(woken);
      };
      this.resolveWait = () => done(true);
    });
  }
}
