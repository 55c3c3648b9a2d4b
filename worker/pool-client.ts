import type pg from 'pg';

/**
 * Run `fn` on a client checked out of `pool`, with an 'error' listener for as long as it is out.
 * pg-pool listens only on idle clients: a connection that drops while checked out (a backend
 * killed, a reset, a server restart) would otherwise be an uncaught 'error' event that ends the
 * process. With the listener the caller's next query fails instead, and the broken client is
 * destroyed on release rather than handed to the next caller. So is a client whose work failed:
 * a statement given up on by its deadline may still be running on it.
 */
export async function withPoolClient<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  const onError = (error: Error) => {
    broken = error;
  };
  client.on('error', onError);
  try {
    return await fn(client);
  } catch (error) {
    broken ??= error instanceof Error ? error : new Error(String(error));
    throw error;
  } finally {
    client.off('error', onError);
    client.release(broken);
  }
}
