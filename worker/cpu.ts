import os from 'node:os';

/**
 * The host's CPU utilisation (0..1) since the previous call, from the kernel's counters. In a
 * container these are the host's (/proc/stat is not namespaced), so on a VM this is the figure
 * the autoscaler averages.
 */
export function cpuSampler(): () => number | null {
  let previous = totals();
  return () => {
    const current = totals();
    const total = current.total - previous.total;
    const idle = current.idle - previous.idle;
    previous = current;
    return total > 0 ? Math.min(1, Math.max(0, 1 - idle / total)) : null;
  };
}

function totals(): { total: number; idle: number } {
  let total = 0;
  let idle = 0;
  for (const cpu of os.cpus()) {
    const t = cpu.times;
    total += t.user + t.nice + t.sys + t.idle + t.irq;
    idle += t.idle;
  }
  return { total, idle };
}
