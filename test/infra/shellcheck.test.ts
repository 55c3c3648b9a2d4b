/**
 * Every shell script of the deployment passes shellcheck (Debian's `shellcheck` package; .ci/run installs
 * it): the VM's run script both as the template in infra/ and as rendered with real values.
 */
import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, test } from 'vitest';
import { renderRunScript, workerEnvironment } from '../../infra/startup.ts';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('../../', import.meta.url));

function shellcheckPath(): string {
  try {
    return execFileSync('sh', ['-c', 'command -v shellcheck'], { encoding: 'utf8' }).trim();
  } catch {
    throw new Error('shellcheck is not installed: apt-get install shellcheck (npm test needs it)');
  }
}

async function shellcheck(file: string): Promise<string> {
  try {
    await run(shellcheckPath(), ['--shell=bash', '--severity=style', '--external-sources', file], { cwd: ROOT });
    return '';
  } catch (error) {
    const e = error as { stdout?: string; message: string };
    return e.stdout || e.message;
  }
}

describe('shellcheck', () => {
  test.each(['infra/worker-run.sh', 'scripts/db-tunnel.sh', 'scripts/test-image.sh', '.ci/run'])('%s', async (file) => {
    expect(await shellcheck(path.join(ROOT, file))).toBe('');
  });

  test('the run script as rendered for a VM', async () => {
    const script = renderRunScript({
      image: `us-central1-docker.pkg.dev/p/r/worker@sha256:${'e'.repeat(64)}`,
      passwordSecretVersion: 'projects/1/secrets/s/versions/2',
      shutdownGraceMs: 25_000,
      healthPort: 8080,
      serverCaPem: '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n',
      env: workerEnvironment({
        dbHost: '10.0.0.3', dbPort: 5432, dbName: 'pgqueue', dbUser: 'pgqueue', dbSslMode: 'verify-ca', dbPoolSize: 2,
        concurrency: 8, queues: '', healthPort: 8080, shutdownGraceMs: 25_000, logLevel: 'info', migrate: true,
      }),
    });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgq-shellcheck-'));
    try {
      const file = path.join(dir, 'run.sh');
      fs.writeFileSync(file, script);
      expect(await shellcheck(file)).toBe('');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('the check can fail', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgq-shellcheck-'));
    try {
      const file = path.join(dir, 'bad.sh');
      fs.writeFileSync(file, '#!/bin/bash\nrm -rf $1/*\n');
      expect(await shellcheck(file)).toMatch(/SC2086/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
