/**
 * A TCP proxy in front of Postgres that misbehaves on request, as networks do: it can swallow a
 * server reply (the server has processed the statement) and reset that connection, or stop
 * forwarding some connections without closing them (a black hole: no RST, no FIN, nothing).
 * Each connection is tagged with the application_name of its startup message, so a test can
 * aim at the pool's connections or the presence connection.
 */
import net from 'node:net';

export interface ProxiedConnection {
  readonly id: number;
  /** application_name from the startup message ('' until it arrived). */
  readonly applicationName: string;
  /** Bytes the server sent that the client was given. */
  readonly repliesForwarded: number;
  readonly blackHoled: boolean;
  readonly closed: boolean;
}

interface Link extends ProxiedConnection {
  id: number;
  applicationName: string;
  repliesForwarded: number;
  blackHoled: boolean;
  closed: boolean;
  client: net.Socket;
  server: net.Socket;
}

type Match = (connection: ProxiedConnection) => boolean;

export class TcpProxy {
  private readonly links = new Set<Link>();
  private nextId = 1;
  /** Reset faults still to make, and which connections they may hit. */
  private resets: { left: number; match: Match; probability: number } | undefined;
  private blackHoleNew: Match | undefined;
  /** Connections still to black-hole at their first statement after start-up, and which. */
  private silenceAtStatement: { left: number; match: Match } | undefined;
  /** Connections still to reset when their client sends a given text, and which. */
  private resetOnSend: { text: string; left: number; match: Match } | undefined;
  /** Connections reset by a dropped reply. */
  dropped = 0;

  private constructor(
    private readonly listener: net.Server,
    readonly port: number,
    private readonly random: () => number,
    private target: { host: string; port: number },
  ) {}

  static async start(target: { host: string; port: number }, random: () => number = Math.random): Promise<TcpProxy> {
    let proxy: TcpProxy | undefined;
    const listener = net.createServer((client) => proxy!.accept(client, proxy!.target));
    await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
    proxy = new TcpProxy(listener, (listener.address() as net.AddressInfo).port, random, target);
    return proxy;
  }

  /** New connections go to `target` from now on (a failover that keeps the address, as Cloud SQL HA does). */
  retarget(target: { host: string; port: number }): void {
    this.target = target;
  }

  /** Reset every open connection at once. */
  resetAll(): void {
    for (const link of this.links) this.destroy(link);
  }

  /** `url` with its host and port replaced by the proxy's. */
  urlFor(url: string): string {
    const u = new URL(url);
    u.hostname = '127.0.0.1';
    u.port = String(this.port);
    return u.toString();
  }

  connections(): ProxiedConnection[] {
    return [...this.links].map(({ id, applicationName, repliesForwarded, blackHoled, closed }) => ({ id, applicationName, repliesForwarded, blackHoled, closed }));
  }

  /**
   * From now on, each server reply to a matching connection is swallowed with `probability`,
   * and that connection reset, until `count` connections were reset.
   */
  dropRepliesAndReset(count: number, match: Match = () => true, probability = 1): void {
    this.resets = { left: count, match, probability };
  }

  /**
   * Stop forwarding on every matching open connection, in both directions, and on matching new
   * ones unless `newConnections` is false.
   */
  blackHole(match: Match, options: { newConnections?: boolean } = {}): void {
    for (const link of this.links) if (match(link)) link.blackHoled = true;
    this.blackHoleNew = options.newConnections === false ? undefined : match;
  }

  /**
   * The next `count` matching connections go silent at the first statement they send after
   * their start-up finished (the statement is swallowed, no reply ever comes): connections that
   * hang mid-query, not ones that cannot connect.
   */
  silenceAtNextStatement(count: number, match: Match): void {
    this.silenceAtStatement = { left: count, match };
  }

  /**
   * The next `count` matching connections are reset when their client sends `text` (in a
   * statement, after start-up); the server never sees it. A connection lost at one precise step.
   */
  resetWhenClientSends(text: string, count: number, match: Match): void {
    this.resetOnSend = { text, left: count, match };
  }

  /** New connections are forwarded again; black-holed ones stay dead, as after a real partition. */
  heal(): void {
    this.blackHoleNew = undefined;
    this.resets = undefined;
    this.silenceAtStatement = undefined;
    this.resetOnSend = undefined;
  }

  async close(): Promise<void> {
    for (const link of this.links) this.destroy(link);
    await new Promise<void>((resolve) => this.listener.close(() => resolve()));
  }

  private accept(client: net.Socket, target: { host: string; port: number }): void {
    const server = net.connect(target.port, target.host);
    const link: Link = { id: this.nextId++, applicationName: '', repliesForwarded: 0, blackHoled: false, closed: false, client, server };
    this.links.add(link);
    let startup = Buffer.alloc(0);
    client.on('data', (chunk: Buffer) => {
      if (link.applicationName === '' && startup.length < 8192) {
        startup = Buffer.concat([startup, chunk]);
        link.applicationName = applicationNameOf(startup);
        if (link.applicationName !== '' && this.blackHoleNew?.(link)) link.blackHoled = true;
      }
      const silence = this.silenceAtStatement;
      if (ready && silence && silence.left > 0 && silence.match(link)) {
        silence.left--;
        link.blackHoled = true;
      }
      const resetOnSend = this.resetOnSend;
      if (ready && resetOnSend && resetOnSend.left > 0 && resetOnSend.match(link) && chunk.includes(resetOnSend.text)) {
        resetOnSend.left--;
        this.destroy(link);
        return;
      }
      if (!link.blackHoled) server.write(chunk);
    });
    // Start-up ends with the server's first ReadyForQuery ('Z'); messages are a type byte and a length.
    let ready = false;
    let pending = Buffer.alloc(0);
    const watchForReady = (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (!ready && pending.length >= 5) {
        const length = pending.readUInt32BE(1);
        if (pending.length < 1 + length) return;
        if (pending[0] === 0x5a) ready = true;
        pending = pending.subarray(1 + length);
      }
    };
    server.on('data', (chunk: Buffer) => {
      if (link.blackHoled) return;
      const reset = this.resets;
      if (reset && reset.left > 0 && link.applicationName !== '' && reset.match(link) && this.random() < reset.probability) {
        reset.left--;
        this.dropped++;
        this.destroy(link);
        return;
      }
      if (!ready) watchForReady(chunk);
      link.repliesForwarded += chunk.length;
      client.write(chunk);
    });
    const end = () => this.destroy(link);
    client.on('error', end);
    server.on('error', end);
    client.on('close', end);
    server.on('close', end);
  }

  private destroy(link: Link): void {
    if (link.closed) return;
    link.closed = true;
    this.links.delete(link);
    link.client.resetAndDestroy();
    link.server.destroy();
  }
}

/** application_name in a StartupMessage (length, protocol 3.0, then name/value pairs), or ''. */
function applicationNameOf(buffer: Buffer): string {
  if (buffer.length < 8) return '';
  const length = buffer.readUInt32BE(0);
  if (buffer.readUInt32BE(4) !== 196608 || buffer.length < length) return '';
  const fields = buffer.subarray(8, length).toString('utf8').split('\0');
  for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i] === 'application_name') return fields[i + 1]!;
  return '?';
}
