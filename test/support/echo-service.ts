// Our implementation of the interop Echo service, with the semantics of the Go peer's
// server (test/interop/go/server.go), so the Go client can be pointed at our server and
// our client at the Go server alike: every response of every method carries the
// metadata received (keys sorted, one entry per value) and the time to the deadline
// when the call began; fail_code / sleep_ms apply per request message.

import type { ServiceImplementation } from "../../src/ttrpc/index.ts";
import { type CallContext, TtrpcError } from "../../src/ttrpc/index.ts";
import type { EchoDefinition, EchoRequest, EchoResponse } from "../interop/gen/echo.ts";

/** What the server saw when a call began. */
interface CallInfo {
  metadata: EchoResponse["metadata"];
  deadlineLeftNano: number;
}

function callInfo(ctx: CallContext): CallInfo {
  const metadata: EchoResponse["metadata"] = [];
  for (const key of Object.keys(ctx.metadata).sort()) for (const value of ctx.metadata[key]!) metadata.push({ key, value });
  // 0 means "no deadline"; a deadline already passed is 1, as in the Go server.
  const deadlineLeftNano = ctx.deadline === undefined ? 0 : Math.max(1, Math.round((ctx.deadline - Date.now()) * 1e6));
  return { metadata, deadlineLeftNano };
}

function respond(ci: CallInfo, payload: Uint8Array, seq: number): EchoResponse {
  return { payload, seq, metadata: ci.metadata, deadlineLeftNano: ci.deadlineLeftNano };
}

/** fail_code first, then sleep_ms cut short by the call's cancellation or deadline. */
async function behave(req: EchoRequest, ctx: CallContext): Promise<void> {
  if (req.failCode !== 0) throw new TtrpcError(req.failCode, req.failMessage);
  if (req.sleepMs > 0) {
    ctx.signal.throwIfAborted();
    await new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        clearTimeout(t);
        reject(ctx.signal.reason);
      };
      const t = setTimeout(() => {
        ctx.signal.removeEventListener("abort", onAbort);
        resolve();
      }, req.sleepMs);
      ctx.signal.addEventListener("abort", onAbort, { once: true });
    });
  }
}

export const echoService: ServiceImplementation<typeof EchoDefinition> = {
  async unary(req, ctx) {
    const ci = callInfo(ctx);
    if (req.failCode !== 0 || req.sleepMs !== 0) await behave(req, ctx);
    return respond(ci, req.payload, 0);
  },
  async clientStream(reqs, ctx) {
    const ci = callInfo(ctx);
    const parts: Uint8Array[] = [];
    for await (const r of reqs) {
      await behave(r, ctx);
      parts.push(r.payload);
    }
    return respond(ci, Buffer.concat(parts), parts.length);
  },
  async *serverStream(req, ctx) {
    const ci = callInfo(ctx);
    await behave(req, ctx);
    for (let seq = 0; seq < req.repeat; seq++) yield respond(ci, req.payload, seq);
  },
  async *bidi(reqs, ctx) {
    const ci = callInfo(ctx);
    let seq = 0;
    for await (const r of reqs) {
      await behave(r, ctx);
      yield respond(ci, r.payload, seq++);
    }
  },
};
