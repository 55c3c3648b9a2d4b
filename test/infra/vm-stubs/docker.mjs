#!/usr/bin/env node
// Stands in for the docker CLI on the simulated VM: records every call, reads --env-file at `create` time
// (as docker does), snapshots what each --volume source holds then (content, mode, owner), and runs the
// "container" as a local process in the image's WORKDIR with the image's CMD and ENV plus the env files;
// a variable naming a mount's target is pointed at its source, which is what the bind mount shows the
// process. `stop` sends SIGTERM and, after the stop timeout, SIGKILL.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parseDockerEnvFile } from './env-file.mjs';

const dir = process.env.STUB_DIR;
const args = process.argv.slice(2);
fs.appendFileSync(path.join(dir, 'calls.jsonl'), `${JSON.stringify({ tool: 'docker', args })}\n`);
const containerFile = path.join(dir, 'container.json');
const pidFile = path.join(dir, 'container.pid');

/** Splits `create`/`run` arguments into flags, image and command. */
function parseRun(rest) {
  const flags = [];
  const env = {};
  let i = 0;
  const withValue = new Set(['--name', '--env-file', '--volume', '-v', '--log-driver', '--stop-signal', '--stop-timeout', '--network', '-e', '--env', '--user', '-u']);
  const mounts = [];
  while (i < rest.length && rest[i].startsWith('-')) {
    let flag = rest[i];
    let value;
    if (flag.includes('=')) [flag, value] = [flag.slice(0, flag.indexOf('=')), flag.slice(flag.indexOf('=') + 1)];
    else if (withValue.has(flag)) value = rest[++i];
    flags.push(value === undefined ? [flag] : [flag, value]);
    if (flag === '--env-file') for (const [k, v] of parseDockerEnvFile(fs.readFileSync(value))) env[k] = v;
    if (flag === '-e' || flag === '--env') env[value.slice(0, value.indexOf('='))] = value.slice(value.indexOf('=') + 1);
    if (flag === '--volume' || flag === '-v') {
      const [source, target, mode] = value.split(':');
      const stat = fs.statSync(source);
      mounts.push({ source, target, mode, content: fs.readFileSync(source).toString('base64'), fileMode: stat.mode & 0o777, uid: stat.uid, gid: stat.gid });
    }
    i++;
  }
  return { flags, env, mounts, image: rest[i], cmd: rest.slice(i + 1) };
}

const flagValue = (flags, name) => flags.find(([f]) => f === name)?.[1];

const [command, ...rest] = args;
switch (command) {
  case 'pull':
  case 'rm':
    process.exit(0);
  case 'create': {
    const spec = parseRun(rest);
    fs.writeFileSync(containerFile, JSON.stringify(spec));
    console.log('0123456789ab');
    process.exit(0);
  }
  case 'run': {
    const spec = parseRun(rest);
    fs.writeFileSync(path.join(dir, 'run.json'), JSON.stringify(spec));
    process.exit(0);
  }
  case 'start': {
    const spec = JSON.parse(fs.readFileSync(containerFile, 'utf8'));
    // Which env files still exist once the container starts (the password file must not).
    spec.envFilesAtStart = Object.fromEntries(
      spec.flags.filter(([flag]) => flag === '--env-file').map(([, file]) => [file, fs.existsSync(file)]),
    );
    fs.writeFileSync(containerFile, JSON.stringify(spec));
    const cmd = spec.cmd.length > 0 ? spec.cmd : JSON.parse(process.env.STUB_IMAGE_CMD);
    const env = { ...JSON.parse(process.env.STUB_IMAGE_ENV ?? '{}'), ...spec.env };
    for (const [key, value] of Object.entries(env)) {
      const mount = spec.mounts.find((m) => m.target === value);
      if (mount) env[key] = mount.source;
    }
    const child = spawn(cmd[0], cmd.slice(1), { cwd: process.env.STUB_WORKDIR, env, stdio: 'inherit' });
    fs.writeFileSync(pidFile, String(child.pid));
    for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => child.kill(signal));
    child.on('exit', (code, signal) => process.exit(code ?? 128 + (signal === 'SIGKILL' ? 9 : 15)));
    break;
  }
  case 'stop': {
    const spec = JSON.parse(fs.readFileSync(containerFile, 'utf8'));
    const pid = Number(fs.readFileSync(pidFile, 'utf8'));
    const timeoutMs = Number(flagValue(spec.flags, '--stop-timeout') ?? 10) * 1000;
    const alive = () => { try { process.kill(pid, 0); return true; } catch { return false; } };
    process.kill(pid, 'SIGTERM');
    const started = Date.now();
    const timer = setInterval(() => {
      if (!alive()) { clearInterval(timer); process.exit(0); }
      if (Date.now() - started > timeoutMs) { process.kill(pid, 'SIGKILL'); }
    }, 50);
    break;
  }
  default:
    console.error(`docker stub: unsupported command ${command}`);
    process.exit(1);
}
