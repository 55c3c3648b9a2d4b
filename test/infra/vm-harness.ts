/**
 * Boots the rendered cloud-init the way a COS VM would, on this machine: in a private mount namespace
 * (tmpfs over /var/lib and /run, so nothing touches the host), the write_files land at their real paths and
 * the unit's ExecStart runs with the unit's Environment. docker, curl, iptables and docker-credential-gcr are
 * stand-ins (test/infra/vm-stubs) that record their calls; the docker stand-in runs the "container" as a
 * local process with the image's CMD, WORKDIR and ENV.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { UNIT_PATH } from '../../infra/startup.ts';

const STUBS = fileURLToPath(new URL('./vm-stubs/', import.meta.url));

interface CloudConfig {
  write_files: Array<{ path: string; permissions: string; content: string }>;
  runcmd: string[];
}

export interface VmOptions {
  /** The rendered user-data. */
  readonly cloudInit: string;
  /** What Secret Manager holds for the password (raw bytes). */
  readonly password: Buffer | string;
  /** The secret version the stand-in Secret Manager answers for. */
  readonly secretVersion: string;
  /** The image's CMD, WORKDIR and ENV, for the stand-in docker. */
  readonly imageCmd?: readonly string[];
  readonly imageWorkdir?: string;
  readonly imageEnv?: Readonly<Record<string, string>>;
  /** Replaces the unit's ExecStart arguments after the script path (default: the unit's own). */
  readonly scriptArgs?: readonly string[];
}

export interface Call {
  readonly tool: string;
  readonly args: string[] | string;
}

/** A bind mount as the stand-in docker saw its source when the container was created. */
export interface Mount {
  readonly source: string;
  readonly target: string;
  readonly mode?: string;
  /** The source file's bytes, base64. */
  readonly content: string;
  readonly fileMode: number;
  readonly uid: number;
  readonly gid: number;
}

/** What docker was asked to create or run. */
export interface ContainerSpec {
  readonly flags: string[][];
  readonly env: Record<string, string>;
  readonly mounts: Mount[];
  readonly image: string;
  readonly cmd: string[];
}

export interface Vm {
  readonly process: ChildProcess;
  /** Everything the unit's process printed. */
  output(): string;
  /** Calls the stand-ins recorded, in order. */
  calls(): Call[];
  /** What the stand-in docker was asked to create (`serve`) or run (`exec`). */
  container(): ContainerSpec & { envFilesAtStart?: Record<string, boolean> };
  ran(): ContainerSpec;
  /** Resolves with the exit code of the unit's process. */
  exited(): Promise<number | null>;
  /** Runs the unit's ExecStop (with the stand-in docker), as systemd does on `systemctl stop`. */
  stop(): Promise<void>;
  /** Kills whatever is left (process group), removes the scratch directory. */
  dispose(): void;
}

/** Parses the unit's `Key=Value` lines (the last one wins, as for the keys we use). */
export function unitSettings(unit: string): Map<string, string[]> {
  const settings = new Map<string, string[]>();
  for (const line of unit.split('\n')) {
    const match = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (match?.[1] && match[2] !== undefined) settings.set(match[1], [...(settings.get(match[1]) ?? []), match[2]]);
  }
  return settings;
}

export function bootVm(options: VmOptions): Vm {
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'pgq-vm-'));
  const bin = path.join(scratch, 'bin');
  const state = path.join(scratch, 'state');
  const files = path.join(scratch, 'files');
  fs.mkdirSync(bin);
  fs.mkdirSync(state);
  fs.mkdirSync(files);
  fs.symlinkSync(path.join(STUBS, 'docker.mjs'), path.join(bin, 'docker'));
  fs.symlinkSync(path.join(STUBS, 'curl.mjs'), path.join(bin, 'curl'));
  fs.symlinkSync(path.join(STUBS, 'recorder'), path.join(bin, 'iptables'));
  fs.symlinkSync(path.join(STUBS, 'recorder'), path.join(bin, 'docker-credential-gcr'));

  const config = parse(options.cloudInit, { version: '1.1' }) as CloudConfig;
  const copies: string[] = [];
  config.write_files.forEach((file, i) => {
    const staged = path.join(files, String(i));
    fs.writeFileSync(staged, file.content);
    copies.push(`mkdir -p ${q(path.dirname(file.path))}`, `install -m ${q(file.permissions)} ${q(staged)} ${q(file.path)}`);
  });
  const unitFile = config.write_files.find((f) => f.path === UNIT_PATH);
  if (!unitFile) throw new Error('cloud-init writes no unit');
  const unit = unitSettings(unitFile.content);
  const execStart = (unit.get('ExecStart')?.[0] ?? '').split(' ');
  const command = options.scriptArgs ? [...execStart.slice(0, 2), ...options.scriptArgs] : execStart;
  const unitEnv = (unit.get('Environment') ?? []).map((e) => e);

  const stubEnv: Record<string, string> = {
    STUB_DIR: state,
    STUB_SECRET_VERSION: options.secretVersion,
    STUB_PASSWORD_B64: Buffer.from(options.password).toString('base64'),
    STUB_IMAGE_CMD: JSON.stringify(options.imageCmd ?? ['true']),
    STUB_IMAGE_ENV: JSON.stringify(options.imageEnv ?? {}),
    STUB_WORKDIR: options.imageWorkdir ?? '/',
  };
  const envArgs = [
    `PATH=${bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
    ...unitEnv,
    ...Object.entries(stubEnv).map(([k, v]) => `${k}=${v}`),
  ];
  const boot = [
    'set -euo pipefail',
    // Private to this mount namespace: the host's /var/lib and /run are untouched.
    'mount -t tmpfs tmpfs /var/lib',
    'mount -t tmpfs tmpfs /run',
    ...copies,
    'cd /',
    `exec env -i ${envArgs.map(q).join(' ')} ${command.map(q).join(' ')}`,
  ].join('\n');
  const bootFile = path.join(scratch, 'boot.sh');
  fs.writeFileSync(bootFile, boot);

  const child = spawn('unshare', ['--mount', '--propagation', 'private', 'bash', bootFile], {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let output = '';
  child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));

  const readJson = (name: string) => JSON.parse(fs.readFileSync(path.join(state, name), 'utf8'));
  return {
    process: child,
    output: () => output,
    calls: () => {
      const file = path.join(state, 'calls.jsonl');
      if (!fs.existsSync(file)) return [];
      return fs.readFileSync(file, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Call);
    },
    container: () => readJson('container.json'),
    ran: () => readJson('run.json'),
    exited: () => exit,
    async stop() {
      const execStop = (unit.get('ExecStop')?.[0] ?? '').split(' ');
      if (execStop[0] !== '/usr/bin/docker') throw new Error(`unexpected ExecStop ${execStop.join(' ')}`);
      const result = spawnSync(path.join(bin, 'docker'), execStop.slice(1), {
        env: { ...process.env, ...stubEnv },
        encoding: 'utf8',
        timeout: 120_000,
      });
      if (result.status !== 0) throw new Error(`ExecStop failed: ${result.stderr}`);
    },
    dispose() {
      if (child.pid !== undefined && child.exitCode === null) {
        try {
          process.kill(-child.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      fs.rmSync(scratch, { recursive: true, force: true });
    },
  };
}

/** Single-quotes for bash. */
function q(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}
