/**
 * scripts/db-tunnel.sh against stand-ins for gcloud and pulumi that record their arguments: the commands it
 * builds with and without --stack, the CA bundle it fetches, and what it says when the VM's sshd refuses
 * TCP forwarding. bash 3.2 (macOS) is not on this machine, so the one construct that breaks there under
 * `set -u` — expanding an empty array — is ruled out statically: the script uses no arrays.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';

const run = promisify(execFile);
const SCRIPT = fileURLToPath(new URL('../../scripts/db-tunnel.sh', import.meta.url));
const OUTPUTS = {
  project: 'my-proj',
  region: 'us-central1',
  instanceGroupManager: 'pgq-worker-group-1234',
  sqlPrivateIp: '10.77.0.3',
  sqlInstance: 'pgq-db-pg-abcd',
  databaseName: 'pgqueue',
  databaseUser: 'pgqueue',
  passwordSecret: 'projects/my-proj/secrets/pgq-db-password-1a2b',
};

let dir: string;
let bin: string;

function stub(name: string, body: string): void {
  fs.writeFileSync(path.join(bin, name), `#!/bin/bash\nprintf '%s\\0' ${name} "$@" >> "$STUB_LOG"; printf '\\n' >> "$STUB_LOG"\n${body}\n`, { mode: 0o755 });
}

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgq-tunnel-'));
  bin = path.join(dir, 'bin');
  fs.mkdirSync(bin);
  stub('pulumi', `echo '${JSON.stringify(OUTPUTS)}'`);
  stub(
    'gcloud',
    `case "$1 $2" in
  "compute instance-groups") echo "https://www.googleapis.com/compute/v1/projects/my-proj/zones/us-central1-b/instances/pgq-worker-x1y2" ;;
  "sql ssl") printf -- '-----BEGIN CERTIFICATE-----\\nMIIBcur\\n-----END CERTIFICATE-----\\n-----BEGIN CERTIFICATE-----\\nMIIBnext\\n-----END CERTIFICATE-----\\n' ;;
  "secrets versions") printf '%s' "p@ss 'w\\"ord" ;;
  "compute ssh") if [ -n "\${STUB_REFUSE:-}" ]; then echo 'channel 2: open failed: administratively prohibited: open failed' >&2; exit 255; fi ;;
esac`,
  );
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

async function tunnel(args: string[], env: Record<string, string> = {}) {
  const log = path.join(dir, `log-${Math.random().toString(36).slice(2)}`);
  fs.writeFileSync(log, '');
  const result = await run('bash', [SCRIPT, ...args], {
    env: { PATH: `${bin}:/usr/bin:/bin`, HOME: dir, STUB_LOG: log, ...env },
  }).catch((error: { stdout: string; stderr: string; code: number }) => error);
  const calls = fs
    .readFileSync(log, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => line.split('\0').filter((_, i, all) => i < all.length - 1));
  return { ...result, calls, code: 'code' in result ? result.code : 0 };
}

describe('db-tunnel.sh', () => {
  test('uses no arrays (an empty one is an error under set -u before bash 4.4)', () => {
    const code = fs.readFileSync(SCRIPT, 'utf8').split('\n').filter((l) => !l.trimStart().startsWith('#'));
    expect(code.filter((l) => /\[[@*]\]|=\(|\+=/.test(l))).toEqual([]);
  });

  test('env without --stack asks pulumi for the current stack, with no empty argument', async () => {
    const { stdout, calls, code } = await tunnel(['env', '15432']);
    expect(code).toBe(0);
    expect(calls[0]).toEqual(['pulumi', 'stack', 'output', '--json']);
    expect(stdout).toContain('export PGHOST=127.0.0.1 PGPORT=15432 PGDATABASE=pgqueue PGUSER=pgqueue PGSSLMODE=verify-ca PGSSLROOTCERT=');
    expect(stdout).toContain(`export PGPASSWORD=p@ss\\ \\'w\\"ord`);
    const ca = /PGSSLROOTCERT=(\S+)/.exec(stdout)![1]!;
    // Both CAs of the instance, as the workers trust them.
    expect(fs.readFileSync(ca, 'utf8').match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
    expect(calls.find((c) => c[1] === 'sql')).toEqual(['gcloud', 'sql', 'ssl', 'server-ca-certs', 'list', '--instance', 'pgq-db-pg-abcd', '--project', 'my-proj', '--format=value(cert)']);
  });

  test('--stack is passed on', async () => {
    const { calls, code } = await tunnel(['--stack', 'dev', 'env']);
    expect(code).toBe(0);
    expect(calls[0]).toEqual(['pulumi', 'stack', 'output', '--json', '--stack', 'dev']);
  });

  test('run: the script runs inside a worker VM, arguments quoted, no tty flag without a terminal', async () => {
    const { calls, code } = await tunnel(['run', 'add-jobs', '2000', '5', '--queue', 'a b']);
    expect(code).toBe(0);
    const ssh = calls.find((c) => c[1] === 'compute' && c[2] === 'ssh')!;
    expect(ssh).toEqual([
      'gcloud', 'compute', 'ssh', 'pgq-worker-x1y2', '--zone', 'us-central1-b', '--project', 'my-proj', '--tunnel-through-iap',
      '--command', 'sudo bash /var/lib/pgqueue/run.sh exec node dist/scripts/add-jobs.js 2000 5 --queue a\\ b',
    ]);
  });

  test('tunnel forwards to Cloud SQL, and says what to use when sshd refuses forwarding', async () => {
    const ok = await tunnel(['tunnel', '15433']);
    expect(ok.code).toBe(0);
    expect(ok.calls.find((c) => c[2] === 'ssh')).toContain('127.0.0.1:15433:10.77.0.3:5432');
    const refused = await tunnel(['--stack', 'dev', 'tunnel'], { STUB_REFUSE: '1' });
    expect(refused.code).toBe(255);
    expect(refused.stderr).toContain("the VM's sshd refuses TCP forwarding; use 'scripts/db-tunnel.sh --stack dev run observe' instead");
  });
});
