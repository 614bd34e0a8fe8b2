// Publishes task events to containerd (Events.Forward on TTRPC_ADDRESS), one at a time
// and in order, so /tasks/start always reaches containerd before that task's /tasks/exit.
// containerd may be restarting: we reconnect and retry for a while rather than drop. A shim
// server's publisher has a connection of its own; the daemon's sandboxes share one per
// containerd (EventsConnections): each connection is an fd in the daemon and one in
// containerd, which is a single process under one open-file limit for every container.

import { socketPath } from "../common/address.ts";
import { EVENTS_CONNECT_TIMEOUT_MS } from "../common/constants.ts";
import { Client, Code, type ServiceClient, TtrpcError } from "../ttrpc/index.ts";
import { EventsDefinition } from "./gen/containerd/services/ttrpc/events/v1/events.ts";
import type { Timestamp } from "./gen/google/protobuf/timestamp.ts";

export interface EncodedEvent {
  /** Full message name, e.g. "containerd.events.TaskExit". */
  typeUrl: string;
  value: Uint8Array;
}

export interface EventSink {
  publish(topic: string, event: EncodedEvent): void;
}

/** An event type as ts-proto generates it: encodable, with its full name. */
export interface EventType<T> {
  readonly $type: string;
  encode(message: T): { finish(): Uint8Array };
}

export function encodeEvent<T>(type: EventType<T>, message: T): EncodedEvent {
  return { typeUrl: type.$type, value: type.encode(message).finish() };
}

export function timestamp(date: Date): Timestamp {
  const ms = date.getTime();
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 };
}

const RETRY_FOR_MS = 60_000;

function retryable(e: unknown): boolean {
  if (!(e instanceof TtrpcError)) return true; // connect failures and the like
  return e.code === Code.UNAVAILABLE || e.code === Code.DEADLINE_EXCEEDED;
}

type EventsClient = ServiceClient<typeof EventsDefinition>;

/** A connection to containerd's ttrpc address, made when first needed, made again after a failure. */
export class EventsConnection {
  private client: Client | null = null;
  private events: EventsClient | null = null;
  private connecting: Promise<EventsClient> | null = null;

  constructor(readonly ttrpcAddress: string) {}

  /** The Events service on a live connection (one connect for all callers at once). */
  get(): Promise<EventsClient> {
    if (this.client !== null && !this.client.isClosed && this.events !== null) return Promise.resolve(this.events);
    this.connecting ??= (async () => {
      try {
        const client = await Client.connect(socketPath(this.ttrpcAddress), { timeoutMs: EVENTS_CONNECT_TIMEOUT_MS });
        this.client = client;
        this.events = client.service(EventsDefinition);
        return this.events;
      } finally {
        this.connecting = null;
      }
    })();
    return this.connecting;
  }

  /** A call on `events` failed: that connection goes (not a newer one another caller made meanwhile). */
  failed(events: EventsClient): void {
    if (events === this.events) this.close();
  }

  close(): void {
    this.client?.close();
    this.client = null;
    this.events = null;
  }
}

/**
 * One EventsConnection per containerd ttrpc address, shared by every publisher that holds it
 * (the daemon's sandboxes' namespaces); closed when the last lets go.
 */
export class EventsConnections {
  private readonly byAddress = new Map<string, { conn: EventsConnection; users: number }>();

  acquire(ttrpcAddress: string): EventsConnection {
    let e = this.byAddress.get(ttrpcAddress);
    if (!e) {
      e = { conn: new EventsConnection(ttrpcAddress), users: 0 };
      this.byAddress.set(ttrpcAddress, e);
    }
    e.users++;
    return e.conn;
  }

  release(conn: EventsConnection): void {
    const e = this.byAddress.get(conn.ttrpcAddress);
    if (!e || e.conn !== conn) return;
    if (--e.users > 0) return;
    this.byAddress.delete(conn.ttrpcAddress);
    conn.close();
  }

  /** Connections held (open or not yet made). */
  get size(): number {
    return this.byAddress.size;
  }
}

export class Publisher implements EventSink {
  private queue: { topic: string; event: EncodedEvent; at: Date }[] = [];
  private running = false;
  private readonly conn: EventsConnection;
  private closed = false;
  private idleWaiters: (() => void)[] = [];

  /** `shared`: take the connection from there (released on close) rather than own one. */
  constructor(
    ttrpcAddress: string,
    private readonly namespace: string,
    private readonly log: (msg: string) => void,
    private readonly shared?: EventsConnections,
  ) {
    this.conn = shared ? shared.acquire(ttrpcAddress) : new EventsConnection(ttrpcAddress);
  }

  publish(topic: string, event: EncodedEvent): void {
    this.queue.push({ topic, event, at: new Date() });
    if (!this.running) void this.drain();
  }

  /** Resolves once everything queued so far has been delivered or given up on. */
  flushed(): Promise<void> {
    if (!this.running) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  close(): void {
    if (this.shared) {
      // Once: a sandbox's server closes its publishers once, but a release too many would close
      // the connection under other sandboxes.
      if (!this.closed) this.shared.release(this.conn);
    } else this.conn.close();
    this.closed = true;
  }

  private async drain(): Promise<void> {
    this.running = true;
    while (this.queue.length > 0) {
      const item = this.queue[0]!;
      if (this.closed && this.shared) {
        // Its connection is released (and may be closed): one made now would be no one's.
        this.log(`dropping event ${item.topic}: published after its sandbox closed`);
        this.queue.shift();
        continue;
      }
      const giveUp = Date.now() + RETRY_FOR_MS;
      for (let attempt = 0; ; attempt++) {
        let events: EventsClient | undefined;
        try {
          events = await this.conn.get();
          await events.forward(
            {
              envelope: {
                timestamp: timestamp(item.at),
                namespace: this.namespace,
                topic: item.topic,
                event: { typeUrl: item.event.typeUrl, value: item.event.value },
              },
            },
            { timeoutMs: 5000 },
          );
          break;
        } catch (e) {
          // A connection that failed goes; one on which containerd answered no stays (other
          // publishers may be using it).
          if (events && retryable(e)) this.conn.failed(events);
          // containerd said no (a bad envelope, a namespace gone): retrying cannot help, and
          // would hold up every later event. Only an unreachable containerd is waited for.
          if (!retryable(e) || Date.now() > giveUp) {
            this.log(`dropping event ${item.topic}: ${String(e)}`);
            break;
          }
          await Bun.sleep(Math.min(1000, 50 * 2 ** attempt));
        }
      }
      this.queue.shift();
    }
    this.running = false;
    for (const w of this.idleWaiters.splice(0)) w();
  }
}
