/** The repository's Dockerfile, parsed with dockerfile-ast into stages (shared by the image tests). */
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { DockerfileParser, type Instruction } from 'dockerfile-ast';

export const DOCKERFILE_PATH = fileURLToPath(new URL('../../Dockerfile', import.meta.url));

export interface Stage {
  readonly name: string | null;
  /** The FROM image as written (e.g. `${NODE_IMAGE}`). */
  readonly from: string;
  readonly instructions: readonly Instruction[];
}

export function parseStages(content = fs.readFileSync(DOCKERFILE_PATH, 'utf8')): { stages: Stage[]; args: Map<string, string> } {
  const dockerfile = DockerfileParser.parse(content);
  const args = new Map<string, string>();
  for (const arg of dockerfile.getInitialARGs()) {
    const property = arg.getProperty();
    if (property?.getName()) args.set(property.getName(), property.getValue() ?? '');
  }
  const stages: Stage[] = [];
  let current: { name: string | null; from: string; instructions: Instruction[] } | undefined;
  for (const instruction of dockerfile.getInstructions()) {
    const keyword = instruction.getKeyword();
    if (keyword === 'FROM') {
      const words = instruction.getArguments().map((a) => a.getValue());
      const asIndex = words.findIndex((w) => w.toUpperCase() === 'AS');
      current = { name: asIndex >= 0 ? (words[asIndex + 1] ?? null) : null, from: words[0] ?? '', instructions: [] };
      stages.push(current);
    } else if (current) {
      current.instructions.push(instruction);
    }
  }
  return { stages, args };
}

/** The final stage's CMD (exec form), WORKDIR, ENV and USER: how the container starts. */
export function runtimeImage(): { cmd: string[]; workdir: string; env: Record<string, string>; user: string | undefined } {
  const { stages } = parseStages();
  const last = stages.at(-1);
  if (!last) throw new Error('Dockerfile has no stage');
  let cmd: string[] = [];
  let workdir = '/';
  let user: string | undefined;
  const env: Record<string, string> = {
    // What the node base image sets.
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
  };
  for (const instruction of last.instructions) {
    const keyword = instruction.getKeyword();
    if (keyword === 'CMD') {
      const json = (instruction as unknown as { getJSONStrings(): Array<{ getJSONValue(): string }> }).getJSONStrings();
      cmd = json.map((s) => s.getJSONValue());
    } else if (keyword === 'WORKDIR') {
      workdir = instruction.getArgumentsContent() ?? '/';
    } else if (keyword === 'USER') {
      user = instruction.getArgumentsContent() ?? undefined;
    } else if (keyword === 'ENV') {
      for (const property of (instruction as unknown as { getProperties(): Array<{ getName(): string; getValue(): string | null }> }).getProperties()) {
        env[property.getName()] = property.getValue() ?? '';
      }
    }
  }
  return { cmd, workdir, env, user };
}

/** The exact Node release of the base image (`24.x.y` from `node:24.x.y-bookworm-slim`). */
export function nodeImageVersion(content?: string): string {
  const image = parseStages(content).args.get('NODE_IMAGE') ?? '';
  const version = /^node:(\d+\.\d+\.\d+)-/.exec(image)?.[1];
  if (!version) throw new Error(`NODE_IMAGE must name an exact release (node:X.Y.Z-...), got "${image}"`);
  return version;
}
