import { execFile } from 'node:child_process';
import type { MigState } from './view.ts';

/** Which managed instance group to watch. */
export interface MigTarget {
  name: string;
  region: string;
  project?: string;
}

interface Exec {
  (command: string, args: string[]): Promise<string>;
}

/** Run a command and return its stdout; the error carries the command's own first line of complaint. */
const run: Exec = (command, args) =>
  new Promise((resolve, reject) => {
    execFile(command, args, { timeout: 30_000, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (!error) return resolve(stdout);
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return reject(new Error(`${command} not found on PATH (install the Google Cloud CLI)`));
      const reason = stderr.split('\n').find((l) => l.trim() !== '') ?? error.message;
      reject(new Error(`${command} ${args.slice(0, 4).join(' ')}: ${reason.trim()}`));
    });
  });

/** The deployed group's name, region and project from the Pulumi stack's outputs. */
export async function migFromStack(stack: string, exec: Exec = run): Promise<MigTarget> {
  const out = JSON.parse(await exec('pulumi', ['stack', 'output', '--json', '--stack', stack])) as Record<string, unknown>;
  const name = out.instanceGroupManager;
  const region = out.region;
  if (typeof name !== 'string' || typeof region !== 'string') {
    throw new Error(`stack ${stack} has no instanceGroupManager/region outputs; deploy it first or pass --mig and --region`);
  }
  return { name, region, project: typeof out.project === 'string' ? out.project : undefined };
}

/**
 * Read the group through gcloud (the user's own credentials, as for every other gcloud command):
 * its target size and autoscaler from `describe`, its instances by status from `list-instances`.
 * Never throws: a failure becomes `error`, so the rest of the view keeps working.
 */
export async function readMig(target: MigTarget, exec: Exec = run): Promise<MigState> {
  const where = ['--region', target.region, ...(target.project ? ['--project', target.project] : []), '--format=json'];
  const empty: MigState = { name: target.name, region: target.region, targetSize: null, recommendedSize: null, instances: {}, cpuTarget: null };
  try {
    const [describe, list] = await Promise.all([
      exec('gcloud', ['compute', 'instance-groups', 'managed', 'describe', target.name, ...where]),
      exec('gcloud', ['compute', 'instance-groups', 'managed', 'list-instances', target.name, ...where]),
    ]);
    const group = JSON.parse(describe) as {
      targetSize?: number;
      autoscaler?: { recommendedSize?: number; autoscalingPolicy?: { cpuUtilization?: { utilizationTarget?: number } } };
    };
    const instances: Record<string, number> = {};
    for (const i of JSON.parse(list) as { instanceStatus?: string; currentAction?: string }[]) {
      // An instance with no action in progress is described by its status (RUNNING, STOPPING...).
      const key = i.currentAction && i.currentAction !== 'NONE' ? i.currentAction : (i.instanceStatus ?? 'UNKNOWN');
      instances[key] = (instances[key] ?? 0) + 1;
    }
    return {
      ...empty,
      targetSize: group.targetSize ?? null,
      recommendedSize: group.autoscaler?.recommendedSize ?? null,
      cpuTarget: group.autoscaler?.autoscalingPolicy?.cpuUtilization?.utilizationTarget ?? null,
      instances,
    };
  } catch (error) {
    return { ...empty, error: (error as Error).message };
  }
}

/** The view's lines for the group. */
export function migLines(m: MigState): string[] {
  if (m.error) return [`instance group ${m.name} (${m.region}): unavailable: ${m.error}`];
  const instances = Object.entries(m.instances)
    .sort()
    .map(([status, n]) => `${status} ${n}`)
    .join('  ');
  const target = m.cpuTarget === null ? '' : `  cpu target ${Math.round(m.cpuTarget * 100)}%`;
  return [
    `instance group ${m.name} (${m.region}): target size ${m.targetSize ?? '-'}  recommended ${m.recommendedSize ?? '-'}${target}`,
    `  instances: ${instances || 'none'}`,
  ];
}
