import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { WorkerMetrics } from './metrics.ts';

export interface HealthChecks {
  /** Why this worker is unhealthy (loop crashed, a fault of its own), or undefined when it is healthy. */
  live(): string | undefined;
  /** Database reachable, schema current, worker registered; the reason when not. */
  ready(): Promise<{ ok: true } | { ok: false; reason: string }>;
  readonly metrics: WorkerMetrics;
}

export interface HealthServer {
  readonly port: number;
  /** The address listened on ('::' or '0.0.0.0' for every interface). */
  readonly address: string;
  close(): Promise<void>;
}

/**
 * /healthz fails only for faults of this worker: a database outage must not fail it, or
 * autohealing would recreate every VM at once for a problem no VM can fix. /readyz is where the
 * database shows, with a generic reason (never the database's own text). /metrics is the
 * Prometheus text format. `host` null listens on every interface.
 */
export function startHealthServer(port: number, checks: HealthChecks, host: string | null = null, onError?: (error: unknown) => void): Promise<HealthServer> {
  const server = http.createServer((req, res) => {
    void respond(req, res, checks, onError);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host ?? undefined, () => {
      server.off('error', reject);
      resolve({
        port: (server.address() as AddressInfo).port,
        address: (server.address() as AddressInfo).address,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}

async function respond(req: http.IncomingMessage, res: http.ServerResponse, checks: HealthChecks, onError?: (error: unknown) => void): Promise<void> {
  const path = (req.url ?? '/').split('?')[0];
  const json = (status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  try {
    if (path === '/healthz') {
      const fault = checks.live();
      json(fault ? 503 : 200, fault ? { status: 'unhealthy', reason: fault } : { status: 'ok' });
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
    onError?.(error);
    json(500, { error: 'internal error; the worker log has the details' });
  }
}
