/** The health server on its own: bind address, and what a failing check may show. */
import { expect, it } from 'vitest';
import { startHealthServer } from '../worker/health.ts';
import { WorkerMetrics } from '../worker/metrics.ts';

it('listens on HEALTH_HOST when given, on every interface otherwise', async () => {
  const checks = { metrics: new WorkerMetrics(), live: () => undefined, ready: async () => ({ ok: true as const }) };
  const local = await startHealthServer(0, checks, '127.0.0.1');
  const every = await startHealthServer(0, checks);
  try {
    expect(local.address).toBe('127.0.0.1');
    expect(['::', '0.0.0.0']).toContain(every.address);
  } finally {
    await local.close();
    await every.close();
  }
});

it('a check that throws answers 500 with a generic text; the error goes to the log only', async () => {
  const logged: unknown[] = [];
  const secret = 'password authentication failed for user "pgqueue" at postgres://pgqueue:hunter2@10.0.0.3/db';
  const server = await startHealthServer(
    0,
    { metrics: new WorkerMetrics(), live: () => undefined, ready: () => Promise.reject(new Error(secret)) },
    '127.0.0.1',
    (error) => logged.push(error),
  );
  try {
    const res = await fetch(`http://127.0.0.1:${server.port}/readyz`);
    expect(res.status).toBe(500);
    expect(await res.text()).not.toMatch(/hunter2|pgqueue|10\.0\.0\.3/);
    expect(logged).toHaveLength(1);
  } finally {
    await server.close();
  }
});
