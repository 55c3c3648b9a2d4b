/** The chaos run's figures as a Markdown table and as JSON, per fault and in all. */
import type { CheckReport } from './checks.ts';

export interface FaultFigures {
  readonly id: string;
  readonly name: string;
  readonly note: string;
  readonly startedAt: number;
  readonly endedAt: number;
  /** From the fault's end until executions started at half the feeder's pace again; null if never. */
  readonly recoveryMs: number | null;
  /** Share of the executions expected at the feeder's pace that did not happen, from the fault's start to recovery. */
  readonly dip: number;
  /** Duplicate executions that began from the fault's start until the next fault. */
  readonly duplicates: { readonly atLeastOnce: number; readonly atMostOnce: number };
  readonly lostEnqueues: number;
  /** Warnings and errors logged by the workers meanwhile: the commonest messages, with counts. */
  readonly logged: readonly (readonly [string, number])[];
}

export interface RunFigures {
  readonly date: string;
  readonly machine: string;
  readonly node: string;
  readonly postgres: string;
  readonly command: string;
  readonly jobs: number;
  readonly workers: number;
  readonly durationS: number;
  readonly faults: readonly FaultFigures[];
  readonly checks: CheckReport;
}

const seconds = (ms: number | null) => (ms === null ? 'did not recover' : `${(ms / 1000).toFixed(1)} s`);

export function faultTable(run: RunFigures): string {
  const lines = [
    '| # | fault | jobs lost | duplicate executions | work flowing again | throughput dip | what the workers logged (warnings, errors) |',
    '|---|---|---|---|---|---|---|',
  ];
  for (const f of run.faults) {
    const dup = f.duplicates;
    const duplicateText =
      dup.atLeastOnce + dup.atMostOnce === 0
        ? '0'
        : [dup.atLeastOnce > 0 ? `${dup.atLeastOnce} at-least-once (allowed)` : '', dup.atMostOnce > 0 ? `${dup.atMostOnce} at-most-once${f.id === '15b' ? ' (allowed by the README, reported)' : ' (NOT allowed)'}` : '']
            .filter(Boolean)
            .join(', ');
    const logged = f.logged.length === 0 ? 'nothing' : f.logged.map(([m, n]) => `${n}× "${m.length > 90 ? `${m.slice(0, 87)}...` : m}"`).join('; ');
    const lost = f.lostEnqueues > 0 ? `${f.lostEnqueues} enqueues (the lost window, allowed)` : '0';
    lines.push(`| ${f.id} | ${f.name}${f.note ? ` (${f.note})` : ''} | ${lost} | ${duplicateText} | ${seconds(f.recoveryMs)} | ${Math.round(f.dip * 100)} % | ${logged.replaceAll('|', '\\|')} |`);
  }
  return lines.join('\n');
}

export function checkList(report: CheckReport): string {
  const lines = report.checks.map((c) => `- ${c.failed.length === 0 ? 'pass' : `**FAIL** (${c.failed.length})`}: ${c.name}`);
  const counted = Object.entries(report.counted).sort(([a], [b]) => a.localeCompare(b));
  if (counted.length > 0) lines.push('', 'How the jobs ended:', ...counted.map(([why, n]) => `- ${why}: ${n}`));
  return lines.join('\n');
}
