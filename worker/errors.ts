/** Thrown by a task for a failure that another attempt cannot fix: the job fails at once, without retries. */
export class PermanentError extends Error {
  override name = 'PermanentError';
}

/** The reason a running job's handler is aborted when its cancellation was requested. */
export class CancelledError extends PermanentError {
  override name = 'CancelledError';
}

/** A configuration or input value that is not acceptable; `field` names it. */
export class InvalidInputError extends Error {
  override name = 'InvalidInputError';
  constructor(
    readonly field: string,
    problem: string,
  ) {
    super(`${field}: ${problem}`);
  }
}

// SQLSTATEs after which the same statement can succeed later: serialization failure, deadlock,
// the server shutting down or starting, too many connections, a statement or lock timeout
// (57014, 55P03: the deadlines of worker/deadlines.ts), and the connection exceptions (08).
const TRANSIENT_SQLSTATES = new Set(['40001', '40P01', '57P01', '57P02', '57P03', '53300', '53400', '57014', '55P03']);
const TRANSIENT_NODE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);

/** Whether an error from the database layer is worth retrying after a pause. */
export function isTransient(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  if (error.cause !== undefined && isTransient(error.cause)) return true;
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string') {
    if (TRANSIENT_SQLSTATES.has(code) || code.startsWith('08') || TRANSIENT_NODE_CODES.has(code)) return true;
  }
  // node-postgres reports a dropped connection, and pg-pool a checkout that timed out while the
  // server was unreachable, as plain Errors with these messages.
  return isTimeout(error) || /Connection terminated|connection timeout|timeout exceeded when trying to connect|Client has encountered a connection error|not queryable/i.test(
    error.message,
  );
}

/**
 * Whether a statement ran out of time: cancelled by the server's statement_timeout, or given up
 * on by the client's deadline ('Query read timeout' from node-postgres). Sending less at once is
 * the cure for the first; the second may also be a silent connection.
 */
export function isTimeout(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  if (error.cause !== undefined && isTimeout(error.cause)) return true;
  return (error as { code?: unknown }).code === '57014' || /Query read timeout/.test(error.message);
}

/** One line for a log or a job's error column. */
export function describeError(error: unknown): string {
  if (error instanceof Error) return `${error.name === 'Error' ? '' : `${error.name}: `}${error.message}`;
  return `non-error thrown: ${String(error)}`;
}
