import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { describeError } from './errors.ts';
import type { WorkerMetrics } from './metrics.ts';

export interface HealthChecks {
  /** The worker loop is running (not crashed, not stopped). */
  live(): boolean;
  /** Database reachable, schema current, worker registered; the reason when not. */
  ready(): Promise<{ ok: true } | { ok: false; reason: string }>;
  readonly metrics: WorkerMetrics;
}

export interface HealthServer {
  readonly port: number;
  close(): Promise<void>;
}

/**
 * /healthz answers from the process alone: a database outage must not fail it, or autohealing
 * would recreate every VM at once for a problem no VM can fix. /readyz is where the database
 * shows. /metrics is the Prometheus text format.
 */
export function startHealthServer(port: number, checks: HealthChecks): Promise<HealthServer> {
  const server = http.createServer((req, res) => {
    void respond(req, res, checks);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, () => {
      server.off('error', reject);
      resolve({
        port: (server.address() as AddressInfo).port,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}

async function respond(req: http.IncomingMessage, res: http.ServerResponse, checks: HealthChecks): Promise<void> {
  const path = (req.url ?? '/').split('?')[0];
  const json = (status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  try {
    if (path === '/healthz') {
      const live = checks.live();
      json(live ? 200 : 503, { status: live ? 'ok' : 'worker loop stopped' });
    } else if (path === '/readyz') {
      const ready = await checks.ready();
      json(ready.ok ? 200 : 503, ready.ok ? { status: 'ready' } : { status: 'not ready', reason: ready.reason });
    } else if (path === '/metrics') {
      const body = await checks.metrics.registry.metrics();
      res.writeHead(200, { 'content-type': checks.metrics.registry.contentType });
      res.end(body);
    } else {
      json(404, { error: `no such path ${path}; try /healthz, /readyz or /metrics` });
    }
  } catch (error) {
    json(500, { error: describeError(error) });
  }
}
