import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chartData, readRecording, renderChart, throughput, type ChartData } from '../scripts/chart.ts';
import type { Observation } from '../scripts/view.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const FIXTURE = path.join(root, 'test/fixtures/recorded-run.ndjson');
const CHROMIUM = '/usr/bin/chromium';

/** One plausible sample; tests override what they are about. */
function sample(at: string, overrides: Partial<Observation> = {}): Observation {
  return {
    at,
    counts: { queued: 10, running: 4, succeeded: 100, failed: 1, expired: 0, cancelled: 0 },
    workers: 2,
    rates: { enqueuedPerSecond: 3, finishedPerSecond: 2.5 },
    totals: { enqueued: 115, ended: 101 },
    oldestQueuedSeconds: 1.5,
    latency: { p50: 0.2, p95: 1.1, p99: 1.4, max: 2 },
    runTime: { p50: 0.1, p95: 0.3 },
    cpu: { average: 0.42, target: null },
    workerList: [
      { id: '1', host: 'host-a', pid: 11, cpu: 0.4, jobsInFlight: 2, concurrency: 4 },
      { id: '2', host: 'host-b', pid: 12, cpu: 0.44, jobsInFlight: 2, concurrency: 4 },
    ],
    ...overrides,
  };
}

/** Samples every 5 s from a fixed start, each built by `each(i)`. */
function series(n: number, each: (i: number) => Partial<Observation> = () => ({})): Observation[] {
  const start = Date.parse('2026-03-12T10:00:00.000Z');
  return Array.from({ length: n }, (_, i) => sample(new Date(start + i * 5000).toISOString(), each(i)));
}

/** The JSON the page carries, read back the way the page reads it. */
function embedded(html: string): { title: string; source: string | null; samples: Observation[]; chart: ChartData } {
  const match = /<script type="application\/json" id="data">([\s\S]*?)<\/script>/.exec(html);
  if (!match) throw new Error('no data block in the page');
  return JSON.parse(match[1]!) as ReturnType<typeof embedded>;
}

const labels = (data: ChartData) => data.panels.map((p) => [p.title, p.series.map((s) => s.label)]);

describe('renderChart', () => {
  const recorded = readRecording(FIXTURE);
  const html = renderChart(recorded, { title: 'load test', source: 'recorded-run.ndjson' });

  it('is one page that needs nothing from the network', () => {
    expect(html).not.toMatch(/src\s*=\s*["']?\s*(https?:)?\/\//i);
    expect(html).not.toMatch(/href\s*=\s*["']?\s*(https?:)?\/\//i);
    expect(html).not.toMatch(/<script[^>]*\ssrc=/i);
    expect(html).not.toMatch(/<link\b/i);
    expect(html).not.toMatch(/@import/i);
    const require = createRequire(import.meta.url);
    const uplot = fs.readFileSync(require.resolve('uplot/dist/uPlot.iife.min.js'), 'utf8');
    const css = fs.readFileSync(require.resolve('uplot/dist/uPlot.min.css'), 'utf8');
    expect(html).toContain(uplot);
    expect(html).toContain(css);
  });

  it('embeds the samples and what it draws as JSON that round-trips', () => {
    const data = embedded(html);
    expect(data.samples).toEqual(recorded);
    expect(data.chart).toEqual(chartData(recorded));
    expect(data.title).toBe('load test');
    expect(data.source).toBe('recorded-run.ndjson');
  });

  it('escapes a payload that would close the script element', () => {
    const evil = '</script><script>alert(1)</script><!--';
    const samples = series(3, (i) => ({
      workerList: [{ id: '1', host: i === 1 ? evil : 'host-a', pid: 1, cpu: 0.1, jobsInFlight: 0, concurrency: 4 }],
      mig: { name: 'g', region: 'r', targetSize: null, recommendedSize: null, instances: {}, cpuTarget: null, error: evil },
    }));
    const page = renderChart(samples, { title: evil, source: evil });
    // The page's own three scripts (data, uPlot, chart) are the only elements closed.
    expect(page.match(/<\/script>/g)).toHaveLength(3);
    expect(page).not.toContain('<script>alert');
    const data = embedded(page);
    expect(data.samples[1]!.workerList[0]!.host).toBe(evil);
    expect(data.samples[0]!.mig!.error).toBe(evil);
    expect(page).toContain('<title>&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;&lt;!--</title>');
  });

  it('says there are no samples, and where it looked', () => {
    const empty = renderChart([]);
    expect(empty).toContain('no samples');
    expect(empty).not.toContain('uPlot');
    expect(empty).toContain('window.__chart = { panels: [] }');
    expect(renderChart([], { source: 'runs/<today>.ndjson' })).toContain('no samples in runs/&lt;today&gt;.ndjson');
  });

  it('draws a single sample, its rates taken from the sample', () => {
    const one = series(1);
    const data = chartData(one);
    expect(data.x).toEqual([Date.parse(one[0]!.at) / 1000]);
    expect(data.panels[1]!.series.map((s) => s.values)).toEqual([[3], [2.5]]);
    const page = renderChart(one);
    expect(embedded(page).chart).toEqual(data);
    expect(page).toContain('· 1 sample</p>');
  });

  it('computes throughput from the totals between samples', () => {
    const samples = series(4, (i) => ({
      // +50 enqueued and +25 ended per 5 s, then counters that went backwards (another database).
      totals: i < 3 ? { enqueued: 1000 + i * 50, ended: 900 + i * 25 } : { enqueued: 10, ended: 5 },
    }));
    expect(throughput(samples)).toEqual({ enqueued: [3, 10, 10, null], finished: [2.5, 5, 5, null] });
  });

  it('draws a recording made before totals and cpu were recorded', () => {
    const old = series(3).map(({ totals: _totals, cpu: _cpu, ...rest }) => rest as Observation);
    const data = chartData(old);
    expect(data.panels[1]!.series.map((s) => s.values)).toEqual([
      [3, null, null],
      [2.5, null, null],
    ]);
    expect(data.panels[3]!.series.map((s) => s.values)).toEqual([[null, null, null]]);
    expect(renderChart(old)).not.toContain('jobs ended');
  });

  it('breaks the lines over a pause in the recording instead of bridging it', () => {
    const start = Date.parse('2026-03-12T10:00:00.000Z');
    const at = [0, 5, 10, 15, 300, 305].map((s) => new Date(start + s * 1000).toISOString());
    const data = chartData(at.map((a) => sample(a)));
    expect(data.x).toHaveLength(7);
    expect(data.x[4]).toBe(start / 1000 + 157.5);
    for (const panel of data.panels) for (const s of panel.series) expect(s.values[4]).toBeNull();
    expect(data.panels[0]!.series[0]!.values.filter((v) => v !== null)).toHaveLength(6);
  });

  it('shows only the workers when no group was observed, and gaps where the group could not be read', () => {
    expect(labels(chartData(series(3)))[2]).toEqual(['Workers', ['workers']]);
    const group = { name: 'g', region: 'us-central1', targetSize: 4, recommendedSize: 5, instances: { NONE: 3, CREATING: 1 }, cpuTarget: 0.6 };
    const samples = series(3, (i) => ({
      mig: i === 1 ? { ...group, targetSize: null, recommendedSize: null, instances: {}, cpuTarget: null, error: 'compute API: 503' } : group,
    }));
    const fleet = chartData(samples).panels[2]!;
    expect(fleet.series.map((s) => [s.label, s.values])).toEqual([
      ['workers', [2, 2, 2]],
      ['instances', [4, null, 4]],
      ['target size', [4, null, 4]],
      ['recommended size', [5, null, 5]],
    ]);
  });

  it('draws the CPU target from the samples, else from the option, else not at all', () => {
    const cpu = (data: ChartData) => data.panels[3]!.series.map((s) => [s.label, s.values]);
    expect(cpu(chartData(series(2)))).toEqual([['CPU average', [42, 42]]]);
    expect(cpu(chartData(series(2), { cpuTarget: 0.6 }))).toEqual([
      ['CPU average', [42, 42]],
      ['target 60 %', [60, 60]],
    ]);
    const known = series(2, (i) => ({ cpu: { average: i === 0 ? null : 0.5, target: 0.7 } }));
    expect(cpu(chartData(known, { cpuTarget: 0.6 }))).toEqual([
      ['CPU average', [null, 50]],
      ['autoscaler target', [70, 70]],
    ]);
    expect(() => chartData(series(2), { cpuTarget: 60 })).toThrow(/cpuTarget must be a fraction/);
  });

  it('keeps finished/s readable when enqueues arrive as one burst', () => {
    const rate = chartData(recorded).panels[1]!;
    const peak = Math.max(...rate.series[0]!.values.filter((v): v is number => v !== null));
    expect(peak).toBeGreaterThan(500);
    expect(rate.axes[0]!.cap).toBeLessThan(peak);
    expect(rate.note).toMatch(/peak [\d,]+ jobs\/s/);
  });

  it('puts the run in the header', () => {
    expect(html).toContain('<h1>load test</h1>');
    expect(html).toContain(`${recorded.length} samples`);
    expect(html).toMatch(/peak queued<\/span><span class="v">[\d,]+</);
    expect(html).toContain('max instances</span><span class="v">8<');
  });
});

describe('readRecording', () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgq-chart-'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  const write = (name: string, lines: string[]) => {
    const file = path.join(dir, name);
    fs.writeFileSync(file, lines.join('\n'));
    return file;
  };

  it('reads one sample per line and skips blank lines', () => {
    const [a, b] = series(2).map((o) => JSON.stringify(o));
    expect(readRecording(write('ok.ndjson', [a!, '', '   ', b!, '']))).toHaveLength(2);
  });

  it('names the file and the line of a malformed sample', () => {
    const [a] = series(1).map((o) => JSON.stringify(o));
    const broken = write('broken.ndjson', [a!, '', '{"at": "2026-03-12T10:00:05Z", "counts": {', a!]);
    expect(() => readRecording(broken)).toThrow(`${broken}:3: not an observe sample`);
    expect(() => readRecording(write('array.ndjson', ['[1, 2]']))).toThrow(/array\.ndjson:1: .*expected a JSON object/);
    expect(() => readRecording(write('no-at.ndjson', [a!, '{"counts": {}}']))).toThrow(/no-at\.ndjson:2: .*"at" is not a timestamp/);
  });

  it('reads the recorded run', () => {
    const samples = readRecording(FIXTURE);
    expect(samples.length).toBeGreaterThan(170);
    for (const [i, o] of samples.entries()) {
      const prev = samples[i - 1];
      if (!prev) continue;
      expect(Date.parse(o.at)).toBeGreaterThan(Date.parse(prev.at));
      expect(o.totals.enqueued).toBeGreaterThanOrEqual(prev.totals.enqueued);
      expect(o.totals.ended).toBeGreaterThanOrEqual(prev.totals.ended);
      expect(o.workers).toBe(o.workerList.length);
    }
  });
});

interface Drawn {
  panels: { title: string; series: { label: string; points: number }[] }[];
}

/**
 * Counts, per panel canvas, the pixels drawn in a series' colour (within a tolerance for
 * anti-aliasing): proof that lines were painted, not only axes.
 */
const PIXELS_BY_COLOUR = `(colours) => Array.from(document.querySelectorAll('.uplot canvas')).map((canvas, i) => {
  const { data } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
  const [r, g, b] = colours[i].match(/[0-9a-f]{2}/gi).map((h) => parseInt(h, 16));
  let n = 0;
  for (let p = 0; p < data.length; p += 4) {
    if (data[p + 3] > 200 && Math.abs(data[p] - r) < 40 && Math.abs(data[p + 1] - g) < 40 && Math.abs(data[p + 2] - b) < 40) n++;
  }
  return n;
})`;

describe.skipIf(!fs.existsSync(CHROMIUM))(`the chart in Chromium (skipped without ${CHROMIUM}: apt-get install chromium)`, () => {
  let browser: Browser;
  let dir: string;
  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgq-chart-browser-'));
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  });
  afterAll(async () => {
    await browser?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  /** Opens a rendered page from file:// with the network cut off, collecting errors and requests. */
  async function open(name: string, html: string, width = 1200): Promise<{ page: Page; errors: string[]; requests: string[]; drawn: Drawn }> {
    const file = path.join(dir, name);
    fs.writeFileSync(file, html);
    const context = await browser.newContext({ viewport: { width, height: 900 }, deviceScaleFactor: 1 });
    const errors: string[] = [];
    const requests: string[] = [];
    await context.route('**/*', (route) => {
      const url = route.request().url();
      return url.startsWith('file:') || url.startsWith('data:') ? route.continue() : route.abort();
    });
    const page = await context.newPage();
    page.on('request', (r) => requests.push(r.url()));
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(pathToFileURL(file).href);
    await page.waitForFunction('window.__chart !== undefined', undefined, { timeout: 20_000 });
    const drawn = await page.evaluate<Drawn>('window.__chart');
    return { page, errors, requests, drawn };
  }

  it('draws the recorded run: four panels on one time axis, every series, offline', async () => {
    const samples = readRecording(FIXTURE);
    const data = chartData(samples);
    const { page, errors, requests, drawn } = await open(
      'recorded-run.html',
      renderChart(samples, { title: 'Load test: 3,200-job burst + 46 jobs/s', source: 'test/fixtures/recorded-run.ndjson' }),
    );
    try {
      expect(errors).toEqual([]);
      expect(requests.filter((u) => !u.startsWith('file:') && !u.startsWith('data:'))).toEqual([]);

      expect(drawn.panels.map((p) => [p.title, p.series.map((s) => s.label)])).toEqual([
        ['Queue depth', ['queued', 'running', 'oldest waiting']],
        ['Throughput', ['enqueued', 'finished']],
        ['Workers and instances', ['workers', 'instances', 'target size', 'recommended size']],
        ['Worker CPU', ['CPU average', 'autoscaler target']],
      ]);
      for (const panel of drawn.panels) for (const s of panel.series) expect(s.points, `${panel.title}: ${s.label}`).toBeGreaterThan(100);

      // Lines were painted: pixels in the colour of each panel's first series.
      const colours = JSON.stringify(data.panels.map((p) => p.series[0]!.color));
      const pixels = await page.evaluate<number[]>(`(${PIXELS_BY_COLOUR})(${colours})`);
      expect(pixels).toHaveLength(4);
      for (const n of pixels) expect(n).toBeGreaterThan(300);

      // One time axis: the plot areas line up exactly, and hovering one panel moves the cursor in all.
      const boxes = await page.locator('.u-over').evaluateAll((els) => els.map((el) => el.getBoundingClientRect()).map((r) => [r.left, r.width]));
      expect(boxes).toHaveLength(4);
      for (const box of boxes) expect(box).toEqual(boxes[0]);
      const legendTimes = () => page.locator('.u-legend .u-series:first-child .u-value').allTextContents();
      const latest = await legendTimes();
      expect(latest).toHaveLength(4);
      expect(latest[0]).toMatch(/\d{1,2}:\d{2}:\d{2}/);
      for (const t of latest) expect(t).toBe(latest[0]);
      // The whole page in one viewport, so the screenshot keeps the cursor (a full-page capture resizes).
      const height = await page.evaluate<number>('document.documentElement.scrollHeight');
      await page.setViewportSize({ width: 1200, height });
      const over = (await page.locator('.u-over').first().boundingBox())!;
      await page.mouse.move(over.x + over.width * 0.22, over.y + over.height / 2);
      const hovered = await legendTimes();
      expect(hovered[0]).not.toBe(latest[0]);
      for (const t of hovered) expect(t).toBe(hovered[0]);

      const artifacts = path.join(root, 'test-artifacts');
      fs.mkdirSync(artifacts, { recursive: true });
      await page.screenshot({ path: path.join(artifacts, 'chart.png') });
      if (process.env.UPDATE_DOCS_SCREENSHOT === '1') {
        fs.mkdirSync(path.join(root, 'docs'), { recursive: true });
        await page.screenshot({ path: path.join(root, 'docs/chart.png') });
      }

      // A zoom (drag) in the top panel zooms all: the same spot in the top and bottom panels is the same time.
      const timeAt = async (panel: number, fraction: number) => {
        const box = (await page.locator('.u-over').nth(panel).boundingBox())!;
        await page.mouse.move(box.x + box.width * fraction, box.y + box.height / 2);
        return (await legendTimes())[panel];
      };
      const before = await timeAt(0, 0.5);
      const top = (await page.locator('.u-over').first().boundingBox())!;
      await page.mouse.move(top.x + top.width * 0.1, top.y + 20);
      await page.mouse.down();
      await page.mouse.move(top.x + top.width * 0.4, top.y + 20, { steps: 5 });
      await page.mouse.up();
      const zoomed = await timeAt(0, 0.5);
      expect(zoomed).not.toBe(before);
      expect(await timeAt(3, 0.5)).toBe(zoomed);

      // Narrower window, narrower plots.
      await page.setViewportSize({ width: 800, height: 900 });
      await page.waitForFunction(`document.querySelector('.u-over').getBoundingClientRect().width < ${boxes[0]![1]! - 300}`);
      expect(errors).toEqual([]);
    } finally {
      await page.context().close();
    }
  });

  it('draws one sample, and a run without a group, without errors', async () => {
    for (const [name, samples] of [
      ['one.html', series(1)],
      ['no-group.html', series(30, (i) => ({ cpu: { average: i % 7 === 3 ? null : 0.3 + i / 100, target: null } }))],
    ] as const) {
      const { page, errors, drawn } = await open(name, renderChart([...samples], { cpuTarget: 0.6 }));
      try {
        expect(errors, name).toEqual([]);
        expect(drawn.panels.map((p) => p.series.map((s) => s.label))[2]).toEqual(['workers']);
        expect(drawn.panels[3]!.series.map((s) => [s.label, s.points])).toEqual([
          ['CPU average', name === 'one.html' ? 1 : 30 - 4],
          ['target 60 %', samples.length],
        ]);
      } finally {
        await page.context().close();
      }
    }
  });

  it('opens the empty page', async () => {
    const { page, errors, drawn } = await open('empty.html', renderChart([], { source: 'nothing.ndjson' }));
    try {
      expect(errors).toEqual([]);
      expect(drawn.panels).toEqual([]);
      expect(await page.textContent('body')).toContain('no samples in nothing.ndjson');
    } finally {
      await page.context().close();
    }
  });
});
