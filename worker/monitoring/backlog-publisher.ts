/**
 * Writes the queue's backlog — jobs queued and due now — to Cloud Monitoring as a custom metric, so the
 * instance group's autoscaler can scale on it as well as on CPU (infra/backlog.ts declares the same names).
 *
 * One writer at a time: the caller invokes `publishIfDue()` only from the maintenance pass that holds the
 * maintenance lock. That lock is per pass, so the leader can change between passes; the point's end time is
 * therefore the start of the current interval (on the wall clock every VM shares through NTP), and a process
 * writes each interval at most once. Two leaders in one interval write the same point, and Monitoring keeps
 * the first (the second is rejected as a duplicate, which is reported as `taken`, not as an error).
 *
 * Self-contained on purpose: it is given its count and its fetch, and knows nothing of the worker's loop.
 */

/** What the publisher needs to know; see parseBacklogMetricConfig for the environment that sets it. */
export interface BacklogMetricConfig {
  /** Project the time series is written to (BACKLOG_METRIC_PROJECT). */
  readonly project: string;
  /** The metric type, `custom.googleapis.com/...` (BACKLOG_METRIC_TYPE). */
  readonly metricType: string;
  /** Value of the `deployment` label: which stack's group the series scales (BACKLOG_METRIC_DEPLOYMENT). */
  readonly deployment: string;
  /** Length of one interval: at most one point per interval (BACKLOG_METRIC_INTERVAL_S, 30 s or more). */
  readonly intervalMs: number;
  /** Base URL of the Monitoring API. */
  readonly monitoringUrl: string;
  /** Base URL of the metadata server (the VM's service account token). */
  readonly metadataUrl: string;
  /** Timeout of each HTTP request. */
  readonly requestTimeoutMs: number;
}

export const DEFAULT_METRIC_TYPE = 'custom.googleapis.com/pgqueue/jobs_due';
export const MIN_INTERVAL_S = 30;
export const MAX_INTERVAL_S = 600;

/** A bad BACKLOG_METRIC_* variable; the message names it. */
export class BacklogMetricConfigError extends Error {
  constructor(
    readonly variable: string,
    problem: string,
  ) {
    super(`${variable}: ${problem}`);
    this.name = 'BacklogMetricConfigError';
  }
}

type Env = Readonly<Record<string, string | undefined>>;

/**
 * Reads the publisher's configuration from the environment; undefined when BACKLOG_METRIC is not on.
 * Throws BacklogMetricConfigError naming the first bad variable.
 */
export function parseBacklogMetricConfig(env: Env): BacklogMetricConfig | undefined {
  const enabled = env.BACKLOG_METRIC?.trim().toLowerCase() ?? '';
  if (['', 'false', '0', 'no', 'off'].includes(enabled)) return undefined;
  if (!['true', '1', 'yes', 'on'].includes(enabled)) {
    throw new BacklogMetricConfigError('BACKLOG_METRIC', `expected true or false, got '${env.BACKLOG_METRIC}'`);
  }
  const project = env.BACKLOG_METRIC_PROJECT?.trim() ?? '';
  // A project id, optionally domain-scoped (example.com:my-project).
  if (!/^([a-z0-9.-]+:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$/.test(project)) {
    throw new BacklogMetricConfigError('BACKLOG_METRIC_PROJECT', `expected a Google Cloud project id, got '${env.BACKLOG_METRIC_PROJECT ?? ''}'`);
  }
  const metricType = env.BACKLOG_METRIC_TYPE?.trim() || DEFAULT_METRIC_TYPE;
  if (!/^(custom|workload)\.googleapis\.com\/[A-Za-z0-9_./-]+$/.test(metricType)) {
    throw new BacklogMetricConfigError('BACKLOG_METRIC_TYPE', `expected custom.googleapis.com/<path>, got '${metricType}'`);
  }
  const deployment = env.BACKLOG_METRIC_DEPLOYMENT?.trim() ?? '';
  if (!/^[a-z0-9][a-z0-9_-]{0,62}$/.test(deployment)) {
    throw new BacklogMetricConfigError(
      'BACKLOG_METRIC_DEPLOYMENT',
      `expected a label value (lower-case letters, digits, - and _), got '${env.BACKLOG_METRIC_DEPLOYMENT ?? ''}'`,
    );
  }
  const rawInterval = env.BACKLOG_METRIC_INTERVAL_S?.trim() || '60';
  const interval = Number(rawInterval);
  if (!Number.isInteger(interval) || interval < MIN_INTERVAL_S || interval > MAX_INTERVAL_S) {
    throw new BacklogMetricConfigError(
      'BACKLOG_METRIC_INTERVAL_S',
      `expected whole seconds from ${MIN_INTERVAL_S} to ${MAX_INTERVAL_S} (Monitoring limits how often a series may be written), got '${rawInterval}'`,
    );
  }
  return {
    project,
    metricType,
    deployment,
    intervalMs: interval * 1000,
    monitoringUrl: 'https://monitoring.googleapis.com',
    metadataUrl: 'http://metadata.google.internal',
    requestTimeoutMs: 10_000,
  };
}

export interface BacklogPublisherDeps {
  /** Counts the jobs queued and due now (the backlog). */
  readonly countDue: () => Promise<number>;
  readonly fetch?: typeof fetch;
  /** Wall clock in ms; the interval boundaries are read from it. */
  readonly now?: () => number;
}

/** What one call did. */
export type PublishOutcome =
  | { readonly status: 'published'; readonly value: number; readonly endTime: string }
  | { readonly status: 'not-due'; readonly endTime: string }
  | { readonly status: 'taken'; readonly value: number; readonly endTime: string };

/** Monitoring (or the metadata server) refused a request; the message carries Google's reason. */
export class BacklogPublishError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
    this.name = 'BacklogPublishError';
  }
}

/** Google's words for a point that was already written for this series and time. */
const DUPLICATE_POINT = /written more frequently than the maximum sampling period|must be written in order|duplicate/i;

export class BacklogPublisher {
  private readonly fetch: typeof fetch;
  private readonly now: () => number;
  private token: { value: string; expiresAt: number } | undefined;
  private lastSlot = -1;

  constructor(
    readonly config: BacklogMetricConfig,
    private readonly deps: BacklogPublisherDeps,
  ) {
    this.fetch = deps.fetch ?? globalThis.fetch;
    this.now = deps.now ?? Date.now;
  }

  /** Writes this interval's backlog point, unless this process already did. */
  async publishIfDue(): Promise<PublishOutcome> {
    const slot = Math.floor(this.now() / this.config.intervalMs);
    const endTime = new Date(slot * this.config.intervalMs).toISOString();
    if (slot <= this.lastSlot) return { status: 'not-due', endTime };
    const value = await this.deps.countDue();
    if (!Number.isSafeInteger(value) || value < 0) throw new Error(`countDue returned ${value}, not a count`);
    // Taken before the request: a failed write is retried in the next interval, not hammered every pass.
    this.lastSlot = slot;
    const written = await this.write(value, endTime);
    return { status: written ? 'published' : 'taken', value, endTime };
  }

  /** The request body: one GAUGE INT64 point on the `global` resource (a per-group metric). */
  timeSeries(value: number, endTime: string): unknown {
    return {
      timeSeries: [
        {
          metric: { type: this.config.metricType, labels: { deployment: this.config.deployment } },
          resource: { type: 'global', labels: { project_id: this.config.project } },
          metricKind: 'GAUGE',
          valueType: 'INT64',
          points: [{ interval: { endTime }, value: { int64Value: String(value) } }],
        },
      ],
    };
  }

  private async write(value: number, endTime: string): Promise<boolean> {
    const url = `${this.config.monitoringUrl}/v3/projects/${encodeURIComponent(this.config.project)}/timeSeries`;
    const body = JSON.stringify(this.timeSeries(value, endTime));
    for (let attempt = 0; ; attempt++) {
      const response = await this.fetch(url, {
        method: 'POST',
        headers: { authorization: `Bearer ${await this.accessToken()}`, 'content-type': 'application/json' },
        body,
        signal: AbortSignal.timeout(this.config.requestTimeoutMs),
      });
      if (response.ok) return true;
      const reason = await googleError(response);
      // A token can be revoked or expire early: fetch a new one once.
      if (response.status === 401 && attempt === 0) {
        this.token = undefined;
        continue;
      }
      if (response.status === 400 && DUPLICATE_POINT.test(reason)) return false;
      throw new BacklogPublishError(`Cloud Monitoring refused the backlog point (${response.status}): ${reason}`, response.status);
    }
  }

  private async accessToken(): Promise<string> {
    if (this.token && this.token.expiresAt > this.now()) return this.token.value;
    const response = await this.fetch(`${this.config.metadataUrl}/computeMetadata/v1/instance/service-accounts/default/token`, {
      headers: { 'metadata-flavor': 'Google' },
      signal: AbortSignal.timeout(this.config.requestTimeoutMs),
    });
    if (!response.ok) {
      throw new BacklogPublishError(`the metadata server gave no access token (${response.status}): ${await googleError(response)}`, response.status);
    }
    const json = (await response.json()) as { access_token?: unknown; expires_in?: unknown };
    if (typeof json.access_token !== 'string' || json.access_token === '') {
      throw new BacklogPublishError('the metadata server answered without an access_token', response.status);
    }
    const expiresIn = typeof json.expires_in === 'number' ? json.expires_in : 300;
    // Renewed a minute early so a token never expires between this check and Monitoring reading it.
    this.token = { value: json.access_token, expiresAt: this.now() + Math.max(0, expiresIn - 60) * 1000 };
    return this.token.value;
  }
}

async function googleError(response: Response): Promise<string> {
  const text = await response.text().catch(() => '');
  try {
    const parsed = JSON.parse(text) as { error?: { message?: string } };
    if (parsed.error?.message) return parsed.error.message;
  } catch {
    // not JSON: the text itself is the reason
  }
  return text.slice(0, 500) || response.statusText;
}
