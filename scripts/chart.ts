/**
 * chart: a recorded observe run (`observe --record FILE`, one Observation per line) as one
 * self-contained HTML page: four panels (queue, throughput, workers and instances, CPU) on one
 * shared time axis, drawn with uPlot. Everything the page needs is inlined, so it opens offline
 * from file:// and can be attached to an issue or a load-test report as it is.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import { duration, fmt } from './format.ts';
import type { Observation } from './view.ts';

export interface ChartOptions {
  /** Page heading and <title>; defaults to "pgqueue run". */
  title?: string;
  /** Where the samples came from (a recording's path): shown in the header and on the empty page. */
  source?: string;
  /**
   * The autoscaler's CPU target as a fraction (0..1], drawn as a reference line when no sample
   * carries one (a run recorded without a group). Samples that know the target win.
   */
  cpuTarget?: number;
}

/** One line of a panel, with the values at each x of its chart (null: nothing to draw there). */
export interface ChartSeries {
  label: string;
  /** The y scale (and axis) it is drawn against. */
  scale: string;
  /** Appended to values in the legend, e.g. "jobs/s". */
  unit: string;
  color: string;
  width: number;
  /** Canvas line dash; reference lines (targets) are dashed. */
  dash?: number[];
  fill?: string;
  /**
   * Drawn as steps rather than slopes: 'after' for a count that holds until the next sample,
   * 'before' for a rate measured over the interval that ends at its sample.
   */
  step?: 'after' | 'before';
  values: (number | null)[];
}

/** A y axis of a panel; the first is on the left, a second one on the right. */
export interface ChartAxis {
  scale: string;
  /** The axis title, i.e. the unit: "jobs", "jobs/s", "instances", "%". */
  label: string;
  /** Fixed range, for percentages. */
  range?: [number, number];
  /** Upper bound when one series would squash the others (see `note`). */
  cap?: number;
}

export interface ChartPanel {
  title: string;
  axes: ChartAxis[];
  series: ChartSeries[];
  /** A caveat shown under the title, e.g. that a burst is drawn off the scale. */
  note?: string;
}

/** What the page draws: one x (Unix seconds) shared by every panel, so the time axes line up. */
export interface ChartData {
  x: number[];
  panels: ChartPanel[];
}

const DEFAULT_TITLE = 'pgqueue run';

/**
 * A time gap longer than this many median sample intervals is drawn as a gap (a null row is
 * inserted), so a recording that was paused does not show a straight line across the pause.
 */
const GAP_FACTOR = 3;

/**
 * When enqueues arrive as one burst they can be a hundred times the finish rate; a linear axis
 * would then flatten finished/s, the line people read. Above this ratio the axis is capped and
 * the burst runs off the top, with its peak named in the panel's note.
 */
const BURST_RATIO = 4;

const round2 = (n: number) => Math.round(n * 100) / 100;

/** The samples in time order (a merged recording may not be), each with its time in ms. */
function ordered(samples: readonly Observation[]): { o: Observation; t: number }[] {
  return samples.map((o) => ({ o, t: Date.parse(o.at) })).sort((a, b) => a.t - b.t);
}

// Recordings made before `totals` and `cpu` were added lack them: such a sample draws no exact
// rate and no CPU instead of failing to draw at all.
const totalsOf = (o: Observation) => o.totals as Observation['totals'] | undefined;
const cpuOf = (o: Observation) => o.cpu as Observation['cpu'] | undefined;

function median(values: number[]): number | null {
  if (values.length === 0) return null;
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/**
 * Enqueued/s and finished/s of each sample: exact, from the growth of the totals since the previous
 * sample. The first sample has no previous one and uses its last-minute rates. A counter that went
 * backwards (another database, a reset) or a repeated timestamp gives no rate rather than a wrong one.
 */
export function throughput(samples: readonly Observation[]): { enqueued: (number | null)[]; finished: (number | null)[] } {
  const s = ordered(samples);
  const enqueued: (number | null)[] = [];
  const finished: (number | null)[] = [];
  s.forEach(({ o, t }, i) => {
    const prev = s[i - 1];
    if (!prev) {
      enqueued.push(o.rates.enqueuedPerSecond);
      finished.push(o.rates.finishedPerSecond);
      return;
    }
    const dt = (t - prev.t) / 1000;
    const rate = (now: number | undefined, before: number | undefined) =>
      dt > 0 && now !== undefined && before !== undefined && now >= before ? round2((now - before) / dt) : null;
    const totals = totalsOf(o);
    const prevTotals = totalsOf(prev.o);
    enqueued.push(rate(totals?.enqueued, prevTotals?.enqueued));
    finished.push(rate(totals?.ended, prevTotals?.ended));
  });
  return { enqueued, finished };
}

/** The group's fields, or nothing when the sample has no group or could not read it. */
function groupOf(o: Observation) {
  return o.mig && o.mig.error === undefined ? o.mig : undefined;
}

function instancesOf(o: Observation): number | null {
  const g = groupOf(o);
  return g ? Object.values(g.instances).reduce((a, b) => a + b, 0) : null;
}

const percent = (v: number | null | undefined) => (v === null || v === undefined ? null : round2(v * 100));

function validCpuTarget(cpuTarget: number | undefined): number | undefined {
  if (cpuTarget === undefined) return undefined;
  if (!Number.isFinite(cpuTarget) || cpuTarget <= 0 || cpuTarget > 1) {
    throw new RangeError(`cpuTarget must be a fraction in (0, 1], e.g. 0.6 for 60 %; got ${cpuTarget}`);
  }
  return cpuTarget;
}

/** The four panels of a run, computed from the samples (pure: what the page draws, testable without a browser). */
export function chartData(samples: readonly Observation[], options: ChartOptions = {}): ChartData {
  const cpuTarget = validCpuTarget(options.cpuTarget);
  const s = ordered(samples);
  const rates = throughput(samples);
  const interval = median(s.slice(1).map(({ t }, i) => t - s[i]!.t));

  // Rows of the chart: one per sample, plus an empty row in the middle of every long pause.
  const x: number[] = [];
  const rows: (number | null)[] = [];
  s.forEach(({ t }, i) => {
    const prev = s[i - 1];
    if (prev && interval !== null && interval > 0 && t - prev.t > GAP_FACTOR * interval) {
      x.push((prev.t + t) / 2000);
      rows.push(null);
    }
    x.push(t / 1000);
    rows.push(i);
  });
  const column = (value: (o: Observation, i: number) => number | null | undefined) =>
    rows.map((i) => (i === null ? null : (value(s[i]!.o, i) ?? null)));

  const hasGroup = s.some(({ o }) => o.mig !== undefined);
  const knownTarget = s.some(({ o }) => cpuOf(o)?.target != null);

  const enqueued = column((_, i) => rates.enqueued[i]);
  const finished = column((_, i) => rates.finished[i]);
  const peak = (values: (number | null)[]) => values.reduce<number>((m, v) => (v !== null && v > m ? v : m), 0);
  const peakEnqueued = peak(enqueued);
  const peakFinished = peak(finished);
  const burst = peakFinished > 0 && peakEnqueued > BURST_RATIO * peakFinished;

  const queue: ChartPanel = {
    title: 'Queue depth',
    axes: [
      { scale: 'jobs', label: 'jobs' },
      { scale: 'seconds', label: 'seconds' },
    ],
    series: [
      { label: 'queued', scale: 'jobs', unit: 'jobs', color: '#2563eb', width: 2, fill: 'rgba(37, 99, 235, 0.10)', values: column((o) => o.counts.queued) },
      { label: 'running', scale: 'jobs', unit: 'jobs', color: '#f59e0b', width: 2, values: column((o) => o.counts.running) },
      { label: 'oldest waiting', scale: 'seconds', unit: 's', color: '#7c3aed', width: 1.5, values: column((o) => o.oldestQueuedSeconds) },
    ],
  };

  const rate: ChartPanel = {
    title: 'Throughput',
    // Twice the best finish rate leaves room for the steady enqueue rate that usually rides along.
    axes: [{ scale: 'rate', label: 'jobs/s', ...(burst ? { cap: peakFinished * 2 } : {}) }],
    series: [
      { label: 'enqueued', scale: 'rate', unit: 'jobs/s', color: '#64748b', width: 1.5, fill: 'rgba(100, 116, 139, 0.12)', step: 'before', values: enqueued },
      { label: 'finished', scale: 'rate', unit: 'jobs/s', color: '#16a34a', width: 2, step: 'before', values: finished },
    ],
    ...(burst ? { note: `enqueue bursts run off the scale: peak ${fmt(peakEnqueued)} jobs/s` } : {}),
  };

  const unread = s.filter(({ o }) => o.mig?.error !== undefined).map(({ o }) => o.mig!.error!);
  const fleet: ChartPanel = {
    title: hasGroup ? 'Workers and instances' : 'Workers',
    ...(unread.length > 0
      ? { note: `the group could not be read in ${unread.length} ${unread.length === 1 ? 'sample' : 'samples'} (gaps): ${unread[0]}` }
      : {}),
    axes: [{ scale: 'count', label: 'instances' }],
    series: [
      { label: 'workers', scale: 'count', unit: '', color: '#0891b2', width: 2.5, step: 'after', values: column((o) => o.workers) },
      ...(hasGroup
        ? ([
            { label: 'instances', scale: 'count', unit: '', color: '#2563eb', width: 1.5, fill: 'rgba(37, 99, 235, 0.08)', step: 'after', values: column(instancesOf) },
            { label: 'target size', scale: 'count', unit: '', color: '#ea580c', width: 1.5, dash: [6, 4], step: 'after', values: column((o) => groupOf(o)?.targetSize) },
            { label: 'recommended size', scale: 'count', unit: '', color: '#a855f7', width: 1.5, dash: [2, 3], step: 'after', values: column((o) => groupOf(o)?.recommendedSize) },
          ] satisfies ChartSeries[])
        : []),
    ],
  };

  const cpuSeries: ChartSeries[] = [
    { label: 'CPU average', scale: 'percent', unit: '%', color: '#dc2626', width: 2, fill: 'rgba(220, 38, 38, 0.08)', values: column((o) => percent(cpuOf(o)?.average)) },
  ];
  if (knownTarget) {
    cpuSeries.push({ label: 'autoscaler target', scale: 'percent', unit: '%', color: '#374151', width: 1.5, dash: [6, 4], values: column((o) => percent(cpuOf(o)?.target)) });
  } else if (cpuTarget !== undefined) {
    cpuSeries.push({ label: `target ${round2(cpuTarget * 100)} %`, scale: 'percent', unit: '%', color: '#374151', width: 1.5, dash: [6, 4], values: column(() => round2(cpuTarget * 100)) });
  }
  const cpu: ChartPanel = {
    title: 'Worker CPU',
    axes: [{ scale: 'percent', label: '%', range: [0, 100] }],
    series: cpuSeries,
  };

  return { x, panels: [queue, rate, fleet, cpu] };
}

/** The header's figures, each a label and a value already formatted. */
function summary(samples: readonly Observation[], data: ChartData): [string, string][] {
  const s = ordered(samples).map(({ o }) => o);
  const first = s[0]!;
  const last = s[s.length - 1]!;
  const max = (values: (number | null | undefined)[]) =>
    values.reduce<number | null>((m, v) => (v === null || v === undefined ? m : m === null || v > m ? v : m), null);
  const finished = data.panels[1]!.series[1]!.values;
  const figures: [string, string][] = [
    ['peak queued', fmt(max(s.map((o) => o.counts.queued)) ?? 0)],
    ['peak finished', `${fmt(max(finished) ?? 0)} jobs/s`],
  ];
  const firstTotals = totalsOf(first);
  const lastTotals = totalsOf(last);
  if (firstTotals && lastTotals) figures.push(['jobs ended', fmt(lastTotals.ended - firstTotals.ended)]);
  figures.push(['max workers', fmt(max(s.map((o) => o.workers)) ?? 0)]);
  const instances = max(s.map(instancesOf));
  if (instances !== null) figures.push(['max instances', fmt(instances)]);
  const longest = max(s.map((o) => o.latency.max));
  if (longest !== null) figures.push(['longest wait to start', duration(longest)]);
  figures.push(['wait to start at the end', `p50 ${duration(last.latency.p50)} · p95 ${duration(last.latency.p95)}`]);
  return figures;
}

const escapeHtml = (text: string) =>
  text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

/**
 * JSON that cannot end the <script> element holding it: every `<` becomes `\u003c`, which
 * JSON.parse reads back as `<`, so neither `</script>` nor `<!--` in a host name or an error
 * message can break out of the data block.
 */
const scriptJson = (value: unknown) => JSON.stringify(value).replace(/</g, '\\u003c');

/**
 * uPlot's browser build and stylesheet, read from the installed package each time, so the page
 * carries the exact version the project depends on and needs no network.
 */
function uplotAssets(): { js: string; css: string } {
  const require = createRequire(import.meta.url);
  const read = (asset: string) => fs.readFileSync(require.resolve(`uplot/dist/${asset}`), 'utf8');
  // A library that ever contained the closing tag would end our element early; `<\/` means the same in JS.
  return { js: read('uPlot.iife.min.js').replace(/<\/script/gi, '<\\/script'), css: read('uPlot.min.css').replace(/<\/style/gi, '<\\/style') };
}

const PAGE_CSS = `
  :root { color-scheme: light; }
  * { box-sizing: border-box; }
  body { margin: 0; background: #f6f7f9; color: #1f2937; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
  main { max-width: 1400px; margin: 0 auto; padding: 20px 24px 32px; }
  header h1 { font-size: 22px; margin: 0 0 2px; font-weight: 650; }
  header .meta { color: #6b7280; margin: 0 0 14px; }
  .figures { display: flex; flex-wrap: wrap; gap: 10px; margin: 0 0 16px; padding: 0; list-style: none; }
  .figures li { background: #fff; border: 1px solid #e5e7eb; border-radius: 8px; padding: 8px 14px; min-width: 130px; }
  .figures .k { display: block; color: #6b7280; font-size: 12px; }
  .figures .v { font-size: 17px; font-weight: 600; font-variant-numeric: tabular-nums; }
  section.panel { background: #fff; border: 1px solid #e5e7eb; border-radius: 8px; padding: 10px 12px 6px; margin: 0 0 10px; }
  section.panel h2 { font-size: 15px; margin: 0 0 2px 4px; font-weight: 600; }
  section.panel .note { color: #6b7280; font-size: 12px; margin: 0 0 0 4px; }
  .plot { width: 100%; }
  .uplot { font-family: inherit; }
  .u-legend { font-size: 13px; text-align: left; padding-left: 60px; }
  .u-legend .u-value { font-variant-numeric: tabular-nums; }
  .empty { background: #fff; border: 1px solid #e5e7eb; border-radius: 8px; padding: 40px; text-align: center; color: #6b7280; font-size: 16px; }
  footer { color: #9ca3af; font-size: 12px; margin-top: 8px; }
`;

/**
 * The page's own script. It takes nothing from the recording but the JSON in #data (never
 * interpolated into code) and builds one uPlot per panel: same x data, same x range, and one
 * synced cursor, so a zoom (drag) in one panel applies to all.
 */
const PAGE_SCRIPT = String.raw`
(function () {
  'use strict';
  var data = JSON.parse(document.getElementById('data').textContent);
  var chart = data.chart;
  var HEIGHT = 210;
  // Axis widths are fixed, not measured, so every panel's plot starts and ends at the same x.
  var LEFT = 64, RIGHT = 64, LABEL = 18;
  var numberFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
  var timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });

  // Times in the header are written as UTC by the renderer; show them in the reader's clock,
  // the end without its date when the run did not cross midnight.
  var firstDay = null;
  document.querySelectorAll('time[datetime]').forEach(function (el) {
    var d = new Date(el.getAttribute('datetime'));
    var day = d.toDateString();
    el.textContent = firstDay === day ? d.toLocaleTimeString() : d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
    if (firstDay === null) firstDay = day;
  });
  var zone = document.getElementById('zone');
  if (zone) zone.textContent = Intl.DateTimeFormat().resolvedOptions().timeZone || 'local time';

  function compact(v) {
    if (v == null) return '';
    var a = Math.abs(v);
    if (a >= 1e6) return numberFormat.format(v / 1e6) + 'M';
    if (a >= 1e4) return numberFormat.format(v / 1e3) + 'k';
    return numberFormat.format(v);
  }

  // uPlot copies option keys as given, so an explicit undefined would replace its default.
  function defined(o) {
    Object.keys(o).forEach(function (k) { if (o[k] === undefined) delete o[k]; });
    return o;
  }

  function xRange(u, lo, hi) {
    // One sample has no extent: show a minute around it.
    return lo === hi ? [lo - 30, hi + 30] : [lo, hi];
  }

  function yRange(axis) {
    if (axis.range) return axis.range.slice();
    return function (u, lo, hi) {
      var top = hi == null || !isFinite(hi) || hi <= 0 ? 1 : hi;
      if (axis.cap != null && top > axis.cap) top = axis.cap;
      return [0, uPlot.rangeNum(0, top, 0.1, true)[1]];
    };
  }

  var plots = [];

  // Away from the cursor the legend shows the run's last values rather than dashes.
  function showLatest(u) {
    if (u.cursor.idx == null && chart.x.length > 0) u.setLegend({ idx: chart.x.length - 1 }, false);
  }

  var drawn = [];
  var container = document.getElementById('panels');
  chart.panels.forEach(function (panel, i) {
    var last = i === chart.panels.length - 1;
    var section = document.createElement('section');
    section.className = 'panel';
    var h2 = document.createElement('h2');
    h2.textContent = panel.title;
    section.appendChild(h2);
    if (panel.note) {
      var note = document.createElement('p');
      note.className = 'note';
      note.textContent = panel.note;
      section.appendChild(note);
    }
    var el = document.createElement('div');
    el.className = 'plot';
    section.appendChild(el);
    container.appendChild(section);

    var scales = { x: { time: true, range: xRange } };
    panel.axes.forEach(function (a) { scales[a.scale] = { range: yRange(a) }; });

    var axes = [defined({
      stroke: '#6b7280',
      grid: { stroke: '#eef0f3', width: 1 },
      ticks: { stroke: '#e5e7eb', width: 1, size: 4 },
      // Only the bottom panel labels the time axis: the four panels share it.
      size: last ? 36 : 6,
      values: last ? undefined : function (u, splits) { return splits.map(function () { return ''; }); },
    })];
    panel.axes.forEach(function (a, j) {
      axes.push({
        scale: a.scale,
        side: j === 0 ? 3 : 1,
        label: a.label,
        labelSize: LABEL,
        labelFont: '600 12px system-ui, sans-serif',
        font: '12px system-ui, sans-serif',
        stroke: '#6b7280',
        size: j === 0 ? LEFT : RIGHT,
        grid: { show: j === 0, stroke: '#eef0f3', width: 1 },
        ticks: { show: false },
        values: function (u, splits) { return splits.map(compact); },
      });
    });
    // Every panel reserves the same right margin, with or without a second axis, so the plots line up.
    if (panel.axes.length < 2) {
      // An axis without a label gets no label space, so the spacer takes it in its size.
      axes.push({ scale: panel.axes[0].scale, side: 1, size: RIGHT + LABEL, grid: { show: false }, ticks: { show: false },
        values: function (u, splits) { return splits.map(function () { return ''; }); } });
    }

    var series = [{ label: 'time', value: function (u, v) { return v == null ? '–' : timeFormat.format(new Date(v * 1000)); } }];
    panel.series.forEach(function (s) {
      series.push(defined({
        label: s.label,
        scale: s.scale,
        stroke: s.color,
        width: s.width,
        dash: s.dash,
        fill: s.fill,
        paths: s.step ? uPlot.paths.stepped({ align: s.step === 'after' ? 1 : -1 }) : undefined,
        points: { size: 5 },
        spanGaps: false,
        value: function (u, v) { return v == null ? '–' : numberFormat.format(v) + (s.unit ? ' ' + s.unit : ''); },
      }));
    });

    var columns = [chart.x].concat(panel.series.map(function (s) { return s.values; }));
    var u = new uPlot({
      width: Math.max(320, el.clientWidth),
      height: HEIGHT,
      scales: scales,
      axes: axes,
      series: series,
      legend: { live: true },
      // No horizontal crosshair: panels have different units, and the legend gives the values.
      // The sync key shares the cursor, and with it a drag-zoom and double-click reset, across panels.
      cursor: { y: false, sync: { key: 'pgq-chart', setSeries: false }, drag: { x: true, y: false } },
      hooks: { setLegend: [showLatest] },
    }, columns, el);
    plots.push(u);
    showLatest(u);

    drawn.push({
      title: panel.title,
      series: panel.series.map(function (s) {
        return { label: s.label, points: s.values.filter(function (v) { return v != null && isFinite(v); }).length };
      }),
    });
  });

  var pending = false;
  window.addEventListener('resize', function () {
    if (pending) return;
    pending = true;
    requestAnimationFrame(function () {
      pending = false;
      plots.forEach(function (u) { u.setSize({ width: Math.max(320, u.root.parentNode.clientWidth), height: HEIGHT }); });
    });
  });

  // What was drawn, for a browser test to read back.
  window.__chart = { panels: drawn };
})();
`;

function page(title: string, head: string, body: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title>
${head}
</head>
<body>
<main>
${body}
</main>
</body>
</html>
`;
}

/**
 * One self-contained HTML page of the samples: header with the run's figures, then the four
 * panels. Pure apart from reading uPlot from node_modules; no sample is ever placed in markup or
 * code unescaped.
 */
export function renderChart(samples: Observation[], options: ChartOptions = {}): string {
  const title = options.title ?? DEFAULT_TITLE;
  const source = options.source === undefined ? '' : `<p class="meta">${escapeHtml(options.source)}</p>`;
  if (samples.length === 0) {
    const where = options.source === undefined ? '' : ` in ${escapeHtml(options.source)}`;
    return page(
      title,
      `<style>${PAGE_CSS}</style>
<script>window.__chart = { panels: [] };</script>`,
      `<header><h1>${escapeHtml(title)}</h1></header>
<p class="empty">no samples${where}</p>`,
    );
  }

  const data = chartData(samples, options);
  const s = ordered(samples);
  const from = new Date(s[0]!.t).toISOString();
  const to = new Date(s[s.length - 1]!.t).toISOString();
  const span = (s[s.length - 1]!.t - s[0]!.t) / 1000;
  const when =
    span > 0
      ? `<time datetime="${from}">${from}</time> – <time datetime="${to}">${to}</time> (<span id="zone">UTC</span>) · ${escapeHtml(duration(span))}`
      : `<time datetime="${from}">${from}</time> (<span id="zone">UTC</span>)`;
  const figures = summary(samples, data)
    .map(([k, v]) => `<li><span class="k">${escapeHtml(k)}</span><span class="v">${escapeHtml(v)}</span></li>`)
    .join('');
  const uplot = uplotAssets();
  return page(
    title,
    `<style>${uplot.css}</style>
<style>${PAGE_CSS}</style>`,
    `<header>
<h1>${escapeHtml(title)}</h1>
<p class="meta">${when} · ${fmt(samples.length)} ${samples.length === 1 ? 'sample' : 'samples'}</p>
${source}
<ul class="figures">${figures}</ul>
</header>
<div id="panels"></div>
<footer>Drag across a panel to zoom all of them; double-click to zoom out.</footer>
<script type="application/json" id="data">${scriptJson({ title, source: options.source ?? null, samples, chart: data })}</script>
<script>${uplot.js}</script>
<script>${PAGE_SCRIPT}</script>`,
  );
}

function malformed(file: string, line: number, why: string): Error {
  return new Error(`${file}:${line}: not an observe sample: ${why}`);
}

/**
 * The samples of a recording (NDJSON, as `observe --record` writes it). Blank lines are skipped;
 * any other line that is not a sample is an error naming the file and the line, since a chart
 * drawn around a silently dropped line would be wrong where it matters.
 */
export function readRecording(file: string): Observation[] {
  const text = fs.readFileSync(file, 'utf8');
  const samples: Observation[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '') return;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (err) {
      throw malformed(file, i + 1, (err as Error).message);
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw malformed(file, i + 1, 'expected a JSON object');
    const o = value as Partial<Observation>;
    if (typeof o.at !== 'string' || Number.isNaN(Date.parse(o.at))) throw malformed(file, i + 1, '"at" is not a timestamp');
    if (typeof o.counts !== 'object' || o.counts === null) throw malformed(file, i + 1, '"counts" is missing');
    if (typeof o.workers !== 'number') throw malformed(file, i + 1, '"workers" is not a number');
    if (typeof o.rates !== 'object' || o.rates === null) throw malformed(file, i + 1, '"rates" is missing');
    if (typeof o.latency !== 'object' || o.latency === null) throw malformed(file, i + 1, '"latency" is missing');
    samples.push(value as Observation);
  });
  return samples;
}
