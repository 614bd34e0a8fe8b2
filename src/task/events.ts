// Publishes task events to containerd (Events.Forward on TTRPC_ADDRESS), one at a time
// and in order, so /tasks/start always reaches containerd before that task's /tasks/exit.
// containerd may be restarting: we reconnect and retry for a while rather than drop.

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

export class Publisher implements EventSink {
  private queue: { topic: string; event: EncodedEvent; at: Date }[] = [];
  private running = false;
  private client: Client | null = null;
  private events: ServiceClient<typeof EventsDefinition> | null = null;
  private idleWaiters: (() => void)[] = [];

  constructor(
    private readonly ttrpcAddress: string,
    private readonly namespace: string,
    private readonly log: (msg: string) => void,
  ) {}

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
    this.client?.close();
    this.client = null;
  }

  private async drain(): Promise<void> {
    this.running = true;
    while (this.queue.length > 0) {
      const item = this.queue[0]!;
      const giveUp = Date.now() + RETRY_FOR_MS;
      for (let attempt = 0; ; attempt++) {
        try {
          const events = await this.connect();
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
          this.client?.close();
          this.client = null;
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

  private async connect(): Promise<ServiceClient<typeof EventsDefinition>> {
    if (this.client !== null && !this.client.isClosed && this.events !== null) return this.events;
    this.client = await Client.connect(socketPath(this.ttrpcAddress), { timeoutMs: EVENTS_CONNECT_TIMEOUT_MS });
    this.events = this.client.service(EventsDefinition);
    return this.events;
  }
}
