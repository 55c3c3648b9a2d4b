/** Settings of one database session, set after it connects. */
import type { Queryable } from './shared.ts';

/**
 * Set each setting for the rest of the session, skipping any this server does not have (an
 * older Postgres without client_connection_check_interval), so one statement serves every
 * supported version. SET rather than startup parameters: connection poolers refuse those.
 */
export async function applySessionSettings(db: Queryable, settings: Readonly<Record<string, string>>): Promise<void> {
  const names = Object.keys(settings);
  await db.query(
    `select set_config(s.name, s.value, false)
       from unnest($1::text[], $2::text[]) as s(name, value)
      where s.name in (select name from pg_settings)`,
    [names, names.map((n) => settings[n]!)],
  );
}

/** The statement timeout for the rest of the current transaction. */
export async function setTransactionStatementTimeout(db: Queryable, ms: number): Promise<void> {
  await db.query(`select set_config('statement_timeout', $1, true)`, [String(ms)]);
}
