/** `npm run migrate`: apply pending migrations to the database in the environment. */
import pg from 'pg';
import { loadDotEnv, parseConnection } from './config.ts';
import { describeError, InvalidInputError } from './errors.ts';
import { migrate } from './migrate.ts';

loadDotEnv();
try {
  const client = new pg.Client(parseConnection(process.env));
  await client.connect();
  try {
    const result = await migrate(client);
    process.stdout.write(
      result.applied.length > 0
        ? `applied ${result.applied.join(', ')}; schema at ${result.current}\n`
        : `nothing to apply; schema at ${result.current}\n`,
    );
  } finally {
    await client.end();
  }
} catch (error) {
  process.stderr.write(`migrate: ${error instanceof InvalidInputError ? 'invalid configuration: ' : ''}${describeError(error)}\n`);
  process.exit(1);
}
