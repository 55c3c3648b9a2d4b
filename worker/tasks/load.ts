import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { InvalidInputError } from '../errors.ts';
import { builtinTasks } from './builtin.ts';
import type { TaskHandler, TaskRegistry } from './types.ts';

/**
 * The built-in tasks plus those of each user module. A module exports its tasks as an object of
 * name -> handler, as the default export or as `tasks`; a user task may replace a built-in one.
 */
export async function loadTasks(modules: readonly string[], field = 'WORKER_TASKS'): Promise<TaskRegistry> {
  const registry = new Map<string, TaskHandler>(builtinTasks);
  for (const spec of modules) {
    const url = spec.startsWith('file:') ? spec : pathToFileURL(path.resolve(spec)).href;
    let mod: Record<string, unknown>;
    try {
      mod = (await import(url)) as Record<string, unknown>;
    } catch (error) {
      throw new InvalidInputError(field, `cannot load task module '${spec}': ${(error as Error).message}`);
    }
    const tasks = (mod.tasks ?? mod.default) as unknown;
    if (typeof tasks !== 'object' || tasks === null) {
      throw new InvalidInputError(field, `module '${spec}' exports no tasks (export default { name: handler } or export const tasks)`);
    }
    for (const [name, handler] of Object.entries(tasks)) {
      if (typeof handler !== 'function') {
        throw new InvalidInputError(field, `module '${spec}': task '${name}' is not a function`);
      }
      registry.set(name, handler as TaskHandler);
    }
  }
  return registry;
}
