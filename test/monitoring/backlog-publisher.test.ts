/**
 * The backlog publisher against a stand-in of the metadata server and the Cloud Monitoring v3 API on
 * 127.0.0.1, which checks each request as Google does (headers, token, path, the time series' shape) and
 * answers 400 with Google's message when it is wrong; the clock is injected, nothing sleeps.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import {
  BacklogPublisher,
  parseBacklogMetricConfig,
  type BacklogMetricConfig,
} from '../../worker/monitoring/backlog-publisher.ts';

interface Seen {
  readonly method: string;
  readonly url: string;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: string;
}

const TOKEN = 'ya29.stand-in';
let server: http.Server;
let base: string;
let seen: Seen[] = [];
/** Lets a test make the next Monitoring answer a failure: [status, message]. */
let nextFailure: Array<[number, string]> = [];
let tokensIssued = 0;

function problemWith(req: Seen): string | undefined {
  if (req.method !== 'POST') return `method ${req.method}`;
  if (req.url !== '/v3/projects/my-project/timeSeries') return `path ${req.url}`;
  if (req.headers.authorization !== `Bearer ${TOKEN}-${tokensIssued}`) return 'Request had invalid authentication credentials.';
  if (!String(req.headers['content-type']).startsWith('application/json')) return 'content-type';
  const body = JSON.parse(req.body) as { timeSeries?: any[] };
  const series = body.timeSeries;
  if (!Array.isArray(series) || series.length !== 1) return 'exactly one time series';
  const ts = series[0];
  if (ts.metric?.type !== 'custom.googleapis.com/pgqueue/jobs_due') return `metric type ${ts.metric?.type}`;
  if (JSON.stringify(ts.metric.labels) !== JSON.stringify({ deployment: 'pgq-dev' })) return 'metric labels';
  if (ts.resource?.type !== 'global' || ts.resource.labels?.project_id !== 'my-project') return 'resource';
  if (ts.metricKind !== 'GAUGE' || ts.valueType !== 'INT64') return 'kind/type';
  if (!Array.isArray(ts.points) || ts.points.length !== 1) return 'one point per request';
  const point = ts.points[0];
  if (!/^\d+$/.test(point.value?.int64Value ?? '')) return 'int64Value must be a decimal string';
  if (point.interval?.startTime !== undefined) return 'a GAUGE point has no start time';
  if (Number.isNaN(Date.parse(point.interval?.endTime)) || !point.interval.endTime.endsWith('Z')) return 'endTime RFC 3339 UTC';
  return undefined;
}

beforeAll(async () => {
  server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      const request = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body };
      seen.push(request);
      const send = (status: number, json: unknown) => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(json));
      };
      if (req.url === '/computeMetadata/v1/instance/service-accounts/default/token') {
        if (req.headers['metadata-flavor'] !== 'Google') return send(403, { error: { message: 'Missing Metadata-Flavor:Google header.' } });
        tokensIssued++;
        return send(200, { access_token: `${TOKEN}-${tokensIssued}`, expires_in: 3599, token_type: 'Bearer' });
      }
      const failure = nextFailure.shift();
      if (failure) return send(failure[0], { error: { code: failure[0], message: failure[1] } });
      const problem = problemWith(request);
      if (problem) return send(problem.includes('credentials') ? 401 : 400, { error: { code: 400, message: problem } });
      send(200, {});
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));
beforeEach(() => {
  seen = [];
  nextFailure = [];
});

const ENV = {
  BACKLOG_METRIC: 'true',
  BACKLOG_METRIC_PROJECT: 'my-project',
  BACKLOG_METRIC_DEPLOYMENT: 'pgq-dev',
  BACKLOG_METRIC_INTERVAL_S: '60',
};

function publisher(clock: { t: number }, backlog: { n: number }): BacklogPublisher {
  const config: BacklogMetricConfig = { ...parseBacklogMetricConfig(ENV)!, monitoringUrl: base, metadataUrl: base };
  return new BacklogPublisher(config, { countDue: async () => backlog.n, now: () => clock.t });
}

const monitoringCalls = () => seen.filter((r) => r.url.startsWith('/v3/'));

describe('configuration', () => {
  test('off unless BACKLOG_METRIC is on', () => {
    expect(parseBacklogMetricConfig({})).toBeUndefined();
    expect(parseBacklogMetricConfig({ BACKLOG_METRIC: 'false', BACKLOG_METRIC_PROJECT: 'x' })).toBeUndefined();
  });

  test('defaults', () => {
    expect(parseBacklogMetricConfig({ ...ENV, BACKLOG_METRIC_INTERVAL_S: undefined })).toEqual({
      project: 'my-project',
      metricType: 'custom.googleapis.com/pgqueue/jobs_due',
      deployment: 'pgq-dev',
      intervalMs: 60_000,
      monitoringUrl: 'https://monitoring.googleapis.com',
      metadataUrl: 'http://metadata.google.internal',
      requestTimeoutMs: 10_000,
    });
  });

  test.each([
    [{ BACKLOG_METRIC: 'maybe' }, 'BACKLOG_METRIC: expected true or false'],
    [{ BACKLOG_METRIC_PROJECT: '' }, 'BACKLOG_METRIC_PROJECT: expected a Google Cloud project id'],
    [{ BACKLOG_METRIC_TYPE: 'compute.googleapis.com/x' }, 'BACKLOG_METRIC_TYPE: expected custom.googleapis.com/<path>'],
    [{ BACKLOG_METRIC_DEPLOYMENT: 'Has Spaces' }, 'BACKLOG_METRIC_DEPLOYMENT: expected a label value'],
    [{ BACKLOG_METRIC_INTERVAL_S: '10' }, 'BACKLOG_METRIC_INTERVAL_S: expected whole seconds from 30 to 600'],
    [{ BACKLOG_METRIC_INTERVAL_S: '45.5' }, 'BACKLOG_METRIC_INTERVAL_S: expected whole seconds from 30 to 600'],
  ])('%j is refused, naming the variable', (override, message) => {
    expect(() => parseBacklogMetricConfig({ ...ENV, ...override })).toThrow(message);
  });
});

describe('publishing', () => {
  test('writes one GAUGE point of the due count, stamped at the start of the interval, with the VM token', async () => {
    const clock = { t: Date.parse('2026-05-04T10:00:42.123Z') };
    const result = await publisher(clock, { n: 1234 }).publishIfDue();
    expect(result).toEqual({ status: 'published', value: 1234, endTime: '2026-05-04T10:00:00.000Z' });
    const [metadata, write] = seen;
    expect(metadata!.headers['metadata-flavor']).toBe('Google');
    expect(write!.url).toBe('/v3/projects/my-project/timeSeries');
    expect(JSON.parse(write!.body).timeSeries[0].points).toEqual([
      { interval: { endTime: '2026-05-04T10:00:00.000Z' }, value: { int64Value: '1234' } },
    ]);
  });

  test('at most one point per interval per process; the token is reused', async () => {
    const clock = { t: Date.parse('2026-05-04T10:01:00.000Z') };
    const backlog = { n: 5 };
    const p = publisher(clock, backlog);
    expect((await p.publishIfDue()).status).toBe('published');
    clock.t += 59_999;
    backlog.n = 7;
    expect(await p.publishIfDue()).toEqual({ status: 'not-due', endTime: '2026-05-04T10:01:00.000Z' });
    clock.t += 1;
    expect(await p.publishIfDue()).toEqual({ status: 'published', value: 7, endTime: '2026-05-04T10:02:00.000Z' });
    expect(monitoringCalls()).toHaveLength(2);
    expect(seen.filter((r) => r.url.startsWith('/computeMetadata/'))).toHaveLength(1);
  });

  test('a point another worker already wrote for this interval is "taken", not an error', async () => {
    nextFailure.push([400, 'One or more TimeSeries could not be written: Points must be written in order. One or more of the points specified had an older start time than the most recent point.']);
    const result = await publisher({ t: Date.parse('2026-05-04T10:03:10Z') }, { n: 3 }).publishIfDue();
    expect(result).toEqual({ status: 'taken', value: 3, endTime: '2026-05-04T10:03:00.000Z' });
  });

  test('a rejected token is replaced once', async () => {
    nextFailure.push([401, 'Request had invalid authentication credentials.']);
    const before = tokensIssued;
    const result = await publisher({ t: Date.parse('2026-05-04T10:04:00Z') }, { n: 1 }).publishIfDue();
    expect(result.status).toBe('published');
    expect(tokensIssued).toBe(before + 2);
    expect(monitoringCalls()).toHaveLength(2);
  });

  test("a missing permission is an error with Google's reason (grants take minutes to propagate)", async () => {
    nextFailure.push([403, "Permission monitoring.timeSeries.create denied (or the resource may not exist)."]);
    await expect(publisher({ t: Date.parse('2026-05-04T10:05:00Z') }, { n: 1 }).publishIfDue()).rejects.toThrow(
      /Cloud Monitoring refused the backlog point \(403\): Permission monitoring.timeSeries.create denied/,
    );
  });

  test('the stand-in refuses a malformed series, so these tests can fail', async () => {
    const p = publisher({ t: Date.parse('2026-05-04T10:06:00Z') }, { n: 2 });
    const original = p.timeSeries.bind(p);
    p.timeSeries = (value, endTime) => {
      const body = original(value, endTime) as { timeSeries: Array<Record<string, unknown>> };
      body.timeSeries[0]!.resource = { type: 'gce_instance', labels: {} };
      return body;
    };
    await expect(p.publishIfDue()).rejects.toThrow(/\(400\): resource/);
  });

  test('a count that is not a count is refused before anything is written', async () => {
    await expect(publisher({ t: 0 }, { n: -1 }).publishIfDue()).rejects.toThrow(/not a count/);
    expect(monitoringCalls()).toEqual([]);
  });
});
