import { parseArgs, type ParseArgsConfig } from 'node:util';
import pg from 'pg';
import { loadDotEnv, parseConnection } from '../worker/config.ts';
import { describeError, InvalidInputError, isTransient } from '../worker/errors.ts';

/** A mistake in how the command was called: usage is printed and the exit code is 2. */
export class UsageError extends Error {}

/** Parse flags with node's parseArgs; unknown or malformed flags become a UsageError. */
export function parseFlags<T extends NonNullable<ParseArgsConfig['options']>>(argv: string[], options: T) {
  try {
    return parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (error) {
    throw new UsageError((error as Error).message.split('\n')[0]);
  }
}

/** A number flag or argument, checked; `name` is how the user wrote it. */
export function numberArg(value: string | undefined, name: string, opts: { min?: number; max?: number; integer?: boolean } = {}): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  const { min = -Infinity, max = Infinity, integer = false } = opts;
  if (value.trim() === '' || !Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) {
    const range = `${min === -Infinity ? '' : `from ${min} `}${max === Infinity ? '' : `to ${max}`}`.trim();
    throw new UsageError(`${name}: expected ${integer ? 'a whole number' : 'a number'}${range ? ` ${range}` : ''}, got '${value}'`);
  }
  return n;
}

/** A pool on the database named by DATABASE_URL or the libpq variables (and .env). */
export function connect(max = 4): pg.Pool {
  loadDotEnv();
  const pool = new pg.Pool({ ...parseConnection(process.env), max, connectionTimeoutMillis: 10_000 });
  pool.on('error', () => {});
  return pool;
}

/**
 * Run a command's main: usage errors exit 2 with the usage text, configuration errors and an
 * unreachable database exit 1 with one line.
 */
export function runCli(name: string, usage: string, main: () => Promise<number | void>): void {
  main().then(
    (code) => process.exit(code ?? 0),
    (error: unknown) => {
      if (error instanceof UsageError) {
        process.stderr.write(`${name}: ${error.message}\n${usage}\n`);
        process.exit(2);
      }
      const prefix = error instanceof InvalidInputError ? 'invalid configuration: ' : isTransient(error) ? 'database unreachable: ' : '';
      process.stderr.write(`${name}: ${prefix}${describeError(error)}\n`);
      process.exit(1);
    },
  );
}
