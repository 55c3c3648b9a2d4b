import fs from 'node:fs';
import type pg from 'pg';
import { InvalidInputError } from './errors.ts';

type Env = Record<string, string | undefined>;

const SSL_MODES = ['disable', 'require', 'no-verify', 'verify-ca', 'verify-full'];

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  const value = Number(raw.trim());
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new InvalidInputError(name, `expected a whole number from ${min} to ${max}, got '${raw}'`);
  }
  return value;
}

function boolean(env: Env, name: string, fallback: boolean): boolean {
  const raw = env[name]?.trim().toLowerCase();
  if (raw === undefined || raw === '') return fallback;
  if (['true', '1', 'yes', 'on'].includes(raw)) return true;
  if (['false', '0', 'no', 'off'].includes(raw)) return false;
  throw new InvalidInputError(name, `expected true or false, got '${env[name]}'`);
}

/**
 * TLS as libpq means it: `require` encrypts without checking the certificate (what Cloud SQL's
 * server certificates need without their CA at hand), `verify-ca`/`verify-full` check it against
 * PGSSLROOTCERT. node-postgres alone would verify on `require` and fail against Cloud SQL.
 */
function sslFor(mode: string, source: string, env: Env): pg.ClientConfig['ssl'] {
  if (!SSL_MODES.includes(mode)) {
    throw new InvalidInputError(source, `expected one of ${SSL_MODES.join(', ')}, got '${mode}'`);
  }
  if (mode === 'disable') return false;
  if (mode === 'require' || mode === 'no-verify') return { rejectUnauthorized: false };
  const rootCert = env.PGSSLROOTCERT;
  if (!rootCert) throw new InvalidInputError('PGSSLROOTCERT', `required with ${source}=${mode}: the CA certificate file`);
  let ca: string;
  try {
    ca = fs.readFileSync(rootCert, 'utf8');
  } catch (error) {
    throw new InvalidInputError('PGSSLROOTCERT', `cannot read '${rootCert}': ${(error as Error).message}`);
  }
  return mode === 'verify-ca' ? { ca, checkServerIdentity: () => undefined } : { ca };
}

/** Connection settings from DATABASE_URL, or else from the libpq variables. */
export function parseConnection(env: Env): pg.ClientConfig {
  const url = env.DATABASE_URL?.trim();
  if (url) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new InvalidInputError('DATABASE_URL', 'not a URL (expected postgres://user:password@host:port/database)');
    }
    if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
      throw new InvalidInputError('DATABASE_URL', `expected the postgres:// scheme, got '${parsed.protocol}//'`);
    }
    const sslmode = parsed.searchParams.get('sslmode');
    parsed.searchParams.delete('sslmode');
    const config: pg.ClientConfig = { connectionString: parsed.toString() };
    const mode = sslmode ?? env.PGSSLMODE;
    if (mode) config.ssl = sslFor(mode, sslmode ? 'DATABASE_URL sslmode' : 'PGSSLMODE', env);
    return config;
  }
  const config: pg.ClientConfig = {};
  if (env.PGHOST !== undefined) config.host = env.PGHOST;
  if (env.PGPORT !== undefined) config.port = port(env.PGPORT);
  if (env.PGDATABASE !== undefined) config.database = env.PGDATABASE;
  if (env.PGUSER !== undefined) config.user = env.PGUSER;
  if (env.PGPASSWORD !== undefined) config.password = env.PGPASSWORD;
  config.ssl = env.PGSSLMODE ? sslFor(env.PGSSLMODE, 'PGSSLMODE', env) : false;
  return config;
}

function port(raw: string): number {
  const value = Number(raw.trim());
  if (raw.trim() === '' || !Number.isInteger(value) || value < 1 || value > 65535) {
    throw new InvalidInputError('PGPORT', `expected a whole number from 1 to 65535, got '${raw}'`);
  }
  return value;
}
