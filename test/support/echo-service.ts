// Our implementation of the interop Echo service, with the semantics echo.proto states,
// so the Go client can be pointed at our server and our client at the Go server alike.

import type { ServiceImplementation } from "../../src/ttrpc/index.ts";
import { type CallContext, TtrpcError } from "../../src/ttrpc/index.ts";
import type { EchoDefinition, EchoRequest, EchoResponse } from "../interop/gen/echo.ts";

function seen(ctx: CallContext): EchoResponse["metadata"] {
  const out: EchoResponse["metadata"] = [];
  for (const key of Object.keys(ctx.metadata).sort()) for (const value of ctx.metadata[key]!) out.push({ key, value });
  return out;
}

function deadlineLeft(ctx: CallContext): number {
  return ctx.deadline === undefined ? 0 : Math.max(1, Math.round((ctx.deadline - Date.now()) * 1e6));
}

async function behave(req: EchoRequest, ctx: CallContext): Promise<void> {
  if (req.failCode !== 0) throw new TtrpcError(req.failCode, req.failMessage);
  if (req.sleepMs > 0) {
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(resolve, req.sleepMs);
      ctx.signal.addEventListener("abort", () => {
        clearTimeout(t);
        reject(ctx.signal.reason);
      });
    });
  }
}

export const echoService: ServiceImplementation<typeof EchoDefinition> = {
  async unary(req, ctx) {
    const deadline = deadlineLeft(ctx);
    await behave(req, ctx);
    return { payload: req.payload, seq: 0, metadata: seen(ctx), deadlineLeftNano: deadline };
  },
  async clientStream(reqs, ctx) {
    const parts: Uint8Array[] = [];
    for await (const r of reqs) parts.push(r.payload);
    return { payload: Buffer.concat(parts), seq: parts.length, metadata: seen(ctx), deadlineLeftNano: deadlineLeft(ctx) };
  },
  async *serverStream(req, ctx) {
    await behave(req, ctx);
    for (let seq = 0; seq < req.repeat; seq++) yield { payload: req.payload, seq, metadata: [], deadlineLeftNano: 0 };
  },
  async *bidi(reqs) {
    let seq = 0;
    for await (const r of reqs) yield { payload: r.payload, seq: seq++, metadata: [], deadlineLeftNano: 0 };
  },
};
