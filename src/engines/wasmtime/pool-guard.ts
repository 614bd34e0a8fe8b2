// The file guard (./file-guard.ts) inside a pooled store (./pool-worker.ts). A run of its own
// shadows path_open, fd_close and fd_renumber with host functions that call wasmtime's own
// WASI from inside (./wasi-shadows.ts); a store driven through the async API refuses such a
// call, and no JavaScript may run on its fiber. So here the guard's calls are wasm in the
// store, and the rules stay the TypeScript of file-guard.ts:
//
//  - a trampoline instance (TRAMPOLINE_WAT) imports wasmtime's own functions, the guest's
//    memory (exported again as "memory": wasmtime's WASI finds it through its caller) and
//    `bunwasi.ask`, a parked host function (../native/pool-host.c). Its path_open (fd_close,
//    fd_renumber) asks the pool what to do; the pool runs the rule (a generator) to its next
//    step and answers either "return this errno" or "call wasmtime's function k with these
//    arguments"; the trampoline makes that call and asks again with its errno.
//  - the trampoline needs the guest's memory, which exists only once the guest is instantiated,
//    and the guest needs its imports before: so the guest imports them from a forwarder
//    (FORWARDER_WAT), instantiated first, whose functions call through its table; the
//    trampoline's element segment fills that table when it is instantiated, right after the
//    guest (before the guest's entry runs).
//  - a guarded store's fd_read, fd_write and poll_oneoff come the same way: on the guest's
//    stdio (its fds 0-2, while they are: a close or a renumber moves them) and clocks the pool
//    serves them as it does in any pooled store, without blocking its thread; on a file the
//    guest opened, wasmtime's own (a file never waits).
//
// What differs from a run of its own: a trap of wasmtime's own function unwinds the trampoline
// and the guest with it (wasm cannot catch it), where a run of its own refuses the open with
// EACCES: only wasmtime's path_filestat_get on a socket traps so, and it is reached only where
// the host look cannot tell (the path escapes its directory through an absolute symlink, which
// wasmtime refuses too, or a kernel without openat2).

import { WASI_MODULE } from "../wasi-abi.ts";
import {
  GUARD_RULES,
  type GuardCall,
  type GuardName,
  type GuardRun,
  GuestFds,
  HandleCount,
  REAL_WASI,
  type RealName,
  type StdioRole,
} from "./file-guard.ts";
import { polledFds } from "./pool-poll.ts";

/** The calls the forwarder takes from the guest: the guard's, reads and writes (on stdio, the pool's), polls (of stdio and clocks, the pool's). */
export type ForwardedName = GuardName | "fd_read" | "fd_write" | "poll_oneoff";
/** What `ask`'s first argument says: a call begins (k: the k-th of these, 1-based), or 0: the last real call's errno is in the second. */
export const GUARD_KINDS: readonly ForwardedName[] = ["path_open", "fd_close", "fd_renumber", "fd_read", "fd_write", "poll_oneoff"];
/** The real calls the trampoline makes: `ask`'s first result k (1-based); 0 = return the second result as the errno. */
export const TRAMPOLINE_CALLS: readonly RealName[] = [
  "path_open",
  "path_filestat_get",
  "fd_filestat_get",
  "fd_close",
  "fd_renumber",
  "fd_read",
  "fd_write",
  "poll_oneoff",
];
/** `ask` carries this many i64 arguments each way (path_open's nine). */
export const ASK_VALUES = 9;

const sig = (types: readonly string[]) => types.map((t) => `(param ${t})`).join(" ");
const i64s = (n: number) => Array.from({ length: n }, () => "i64").join(" ");

/** The forwarder the guest links to: each function calls its table's slot, which the trampoline fills. */
export const FORWARDER_WAT = `(module
${GUARD_KINDS.map((n, i) => `  (type $t${i} (func ${sig(REAL_WASI[n])} (result i32)))`).join("\n")}
  (table (export "guard") ${GUARD_KINDS.length} ${GUARD_KINDS.length} funcref)
${GUARD_KINDS.map(
  (n, i) =>
    `  (func (export "${n}") (type $t${i}) ${REAL_WASI[n].map((_, j) => `(local.get ${j})`).join(" ")} (call_indirect (type $t${i}) (i32.const ${i})))`,
).join("\n")})`;

/** Widens argument `j` of a guard call's `types` to the i64 `ask` carries. */
const widen = (t: string, j: number) => (t === "i64" ? `(local.get ${j})` : `(i64.extend_i32_u (local.get ${j}))`);
/** Narrows the trampoline's local $a`j` to argument type `t` of a real call. */
const narrow = (t: string, j: number) => (t === "i64" ? `(local.get $a${j})` : `(i32.wrap_i64 (local.get $a${j}))`);
const locals = Array.from({ length: ASK_VALUES }, (_, j) => `$a${j}`);

/** The trampoline: the guard's loop (ask, then call what it says, until it says return). */
export const TRAMPOLINE_WAT = `(module
${TRAMPOLINE_CALLS.map((n) => `  (import "${WASI_MODULE}" "${n}" (func $${n} ${sig(REAL_WASI[n])} (result i32)))`).join("\n")}
  (import "bunwasi" "ask" (func $ask (param i32 i32 ${i64s(ASK_VALUES)}) (result i32 ${i64s(ASK_VALUES)})))
  (import "env" "memory" (memory 0))
  (import "env" "guard" (table ${GUARD_KINDS.length} funcref))
  (export "memory" (memory 0))
  (elem (table 0) (i32.const 0) func ${GUARD_KINDS.map((n) => `$guard_${n}`).join(" ")})
${GUARD_KINDS.map(
  (n, i) =>
    `  (func $guard_${n} ${sig(REAL_WASI[n])} (result i32) (call $run (i32.const ${i + 1}) ${Array.from({ length: ASK_VALUES }, (_, j) =>
      j < REAL_WASI[n].length ? widen(REAL_WASI[n][j] as string, j) : "(i64.const 0)",
    ).join(" ")}))`,
).join("\n")}
  (func $run (param $kind i32) ${locals.map((l) => `(param ${l} i64)`).join(" ")} (result i32)
    (local $r i32) (local $next i32)
    (loop $again
      (call $ask (local.get $kind) (local.get $r) ${locals.map((l) => `(local.get ${l})`).join(" ")})
      ${[...locals]
        .reverse()
        .map((l) => `(local.set ${l})`)
        .join(" ")}
      (local.set $next)
      (local.set $kind (i32.const 0))
      ${TRAMPOLINE_CALLS.map((_, k) => `(block $c${TRAMPOLINE_CALLS.length - k}`).join(" ")}
      (block $c0 (br_table ${["$c0", ...TRAMPOLINE_CALLS.map((_, k) => `$c${k + 1}`), "$c0"].join(" ")} (local.get $next)))
      (return (i32.wrap_i64 (local.get $a0))))
${TRAMPOLINE_CALLS.map(
  (n, k) =>
    `      (local.set $r (call $${n} ${REAL_WASI[n].map((t, j) => narrow(t, j)).join(" ")}))\n      (br $again)${k < TRAMPOLINE_CALLS.length - 1 ? ")" : ""}`,
).join("\n")})
    (unreachable)))`;

/** The signature of `bunwasi.ask`: (kind, errno, 9 × i64) → (next, 9 × i64). */
export const ASK_PARAMS: ("i32" | "i64")[] = ["i32", "i32", ...Array.from({ length: ASK_VALUES }, () => "i64" as const)];
export const ASK_RESULTS: ("i32" | "i64")[] = ["i32", ...Array.from({ length: ASK_VALUES }, () => "i64" as const)];

/** What the pool answers an `ask`: the trampoline's next step. */
export type AskAnswer = { next: number; values: bigint[] };
/**
 * Or: the pool serves the call itself: a read or write of the guest's stdio (0, 1, 2), or a
 * poll of clocks and stdio only ("poll", ./pool-poll.ts).
 */
export type AskPool = { pool: StdioRole | "poll"; args: number[] };

/** A call that only passes through to wasmtime's own (a read or write of a file). */
function* passThrough(name: RealName, args: (number | bigint)[]): GuardCall<never> {
  return yield { name, args };
}

/**
 * One pooled run's guard: its counts and fds, and the call in progress (one at a time: the guest
 * is single-threaded and waits in it).
 */
export class PooledGuard {
  private readonly run: GuardRun<never>;
  private call: GuardCall<never> | undefined;
  /** What `ask` answers, filled anew by each (the pool copies it into the store's slot at once). */
  private readonly answer: AskAnswer = { next: 0, values: Array.from({ length: ASK_VALUES }, () => 0n) };

  /**
   * `preopens`: the run's preopened host directories in order (numbered from 3); `cap`: its
   * handle cap; `memory`: the guest's memory at the parked call.
   */
  constructor(preopens: string[], cap: number | undefined, memory: () => Uint8Array, killed: () => boolean) {
    this.run = {
      handles: new HandleCount(3 + preopens.length, cap),
      fds: new GuestFds(preopens),
      memory,
      killed,
      drop: () => {},
    };
  }

  /**
   * The answer to an `ask(kind, errno, values)`: a new guard call (kind ≥ 1) is begun with the
   * call's arguments, or (kind 0) the one in progress goes on with its real call's errno. An
   * AskAnswer is valid until the next `ask`. Throws on a kind it does not know or an `ask` with
   * no call in progress.
   */
  ask(kind: number, errno: number, values: ArrayLike<bigint>): AskAnswer | AskPool {
    let step: IteratorResult<{ name: RealName; args: (number | bigint)[] }, { errno: number }>;
    if (kind !== 0) {
      const name = GUARD_KINDS[kind - 1];
      if (!name) throw new Error(`the file guard has no call ${kind}`);
      const types = REAL_WASI[name] as readonly string[];
      const args = types.map((t, j) => (t === "i64" ? BigInt.asIntN(64, values[j] ?? 0n) : Number(BigInt.asIntN(32, values[j] ?? 0n))));
      if (name === "fd_read" || name === "fd_write") {
        const role = this.run.fds.stdioRole(args[0] as number);
        if (role !== undefined && (name === "fd_read") === (role === 0)) return { pool: role, args: args as number[] };
        this.call = passThrough(name, args);
      } else if (name === "poll_oneoff") {
        // Clocks and stdio only: the pool's (a clock waits on a timer there, never on this
        // thread); a file of the guest's in it: wasmtime's own, which a file makes ready at once.
        const fds = polledFds(this.run.memory(), (args[0] as number) >>> 0, (args[2] as number) >>> 0);
        if (fds.every((fd) => this.run.fds.stdioRole(fd) !== undefined)) return { pool: "poll", args: args as number[] };
        this.call = passThrough(name, args);
      } else this.call = GUARD_RULES[name](this.run, args);
      step = this.next(undefined);
    } else {
      if (!this.call) throw new Error("the file guard has no call in progress");
      step = this.next(errno);
    }
    if (step.done) {
      this.call = undefined;
      return this.reply(0, [step.value.errno]);
    }
    const k = TRAMPOLINE_CALLS.indexOf(step.value.name);
    if (k < 0) throw new Error(`the file guard asked for ${step.value.name}, which the trampoline does not call`);
    return this.reply(k + 1, step.value.args);
  }

  /** The trampoline's next step `next` with `values`, the rest of its ASK_VALUES 0. */
  private reply(next: number, values: readonly (number | bigint)[]): AskAnswer {
    this.answer.next = next;
    for (let j = 0; j < ASK_VALUES; j++) this.answer.values[j] = j < values.length ? BigInt(values[j] as number | bigint) : 0n;
    return this.answer;
  }

  private next(errno: number | undefined) {
    const call = this.call as GuardCall<never>;
    try {
      const step = errno === undefined ? call.next() : call.next({ errno });
      if (step.done && "trap" in step.value) throw new Error("the file guard handed on a trap");
      return step as IteratorResult<{ name: RealName; args: (number | bigint)[] }, { errno: number }>;
    } catch (e) {
      this.call = undefined;
      throw e;
    }
  }

  /** Which of its stdio the guest's `fd` is now, if any. */
  stdioRole(fd: number): StdioRole | undefined {
    return this.run.fds.stdioRole(fd);
  }

  /** Closes what the guard kept open (the run is over). */
  dispose(): void {
    this.call = undefined;
    this.run.fds.dispose();
  }
}
