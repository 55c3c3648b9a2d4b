/** Text helpers shared by the terminal views. */

/** `[#####-----]  45%  4,500/10,000  1,234/s`, fitted to `width` columns. */
export function progressLine(done: number, total: number, seconds: number, width: number): string {
  const pct = total > 0 ? Math.min(1, done / total) : 1;
  const rate = seconds > 0 ? Math.round(done / seconds) : 0;
  const tail = ` ${String(Math.round(pct * 100)).padStart(3)}%  ${fmt(done)}/${fmt(total)}  ${fmt(rate)}/s`;
  const barWidth = Math.max(0, Math.min(40, width - tail.length - 3));
  if (barWidth < 5) return tail.trim().slice(0, Math.max(1, width - 1));
  const filled = Math.round(pct * barWidth);
  return `[${'#'.repeat(filled)}${'-'.repeat(barWidth - filled)}]${tail}`;
}

/** A whole number with thousands separators. */
export function fmt(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

/** Seconds as ms or s, or '-' when unknown. */
export function duration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return '-';
  if (seconds < 1) return `${(seconds * 1000).toFixed(seconds < 0.01 ? 1 : 0)} ms`;
  if (seconds < 120) return `${seconds.toFixed(1)} s`;
  return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
}
