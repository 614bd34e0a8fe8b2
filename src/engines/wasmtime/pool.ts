// The run pools of an engine that holds many runs at once (the shared-mode daemon): at most
// one thread per core (./pool-worker.ts), each driving many core modules' stores, made on
// demand and ended once idle. Which runs a pool can take is `poolable`; the rest keep a
// thread of their own (./worker.ts).

import { availableParallelism } from "node:os";
import { workerScript } from "../../common/compiled.ts";
import { nativeLibCandidates } from "../kill-signals.ts";
import type { PoolMessage, PoolReply } from "./pool-worker.ts";
import type { RunRequest } from "./protocol.ts";
import { countRunThread, runThreadIs } from "./run-threads.ts";
import { POOL_WORKER_SCRIPT } from "./scripts.ts";

export const POOL_LIB_NAME = "libbunwasi-pool.so";

/** How long an idle pool thread stays for the next run before it ends. */
const POOL_IDLE_MS = 2000;

/**
 * The WASI functions a pooled module may import: every one wasmtime's own answers without
 * waiting, the ones the pool serves itself (POOL_CALLS), and the file guard's (path_open,
 * fd_close, fd_renumber: ./pool-guard.ts). Not yet: sockets.
 */
const POOLED_WASI = new Set([
  "args_get",
  "args_sizes_get",
  "environ_get",
  "environ_sizes_get",
  "clock_res_get",
  "clock_time_get",
  "fd_advise",
  "fd_allocate",
  "fd_close",
  "fd_datasync",
  "fd_fdstat_get",
  "fd_fdstat_set_flags",
  "fd_fdstat_set_rights",
  "fd_filestat_get",
  "fd_filestat_set_size",
  "fd_filestat_set_times",
  "fd_prestat_get",
  "fd_prestat_dir_name",
  "fd_read",
  "fd_readdir",
  "fd_renumber",
  "fd_seek",
  "fd_sync",
  "fd_tell",
  "fd_write",
  "path_create_directory",
  "path_filestat_get",
  "path_filestat_set_times",
  "path_link",
  "path_open",
  "path_readlink",
  "path_remove_directory",
  "path_rename",
  "path_symlink",
  "path_unlink_file",
  "poll_oneoff",
  "proc_exit",
  "random_get",
  "sched_yield",
]);

/** Whether a pool can run `req`: a core module whose every import it serves, stdio by path, no terminal, no host modules. */
export function poolable(req: RunRequest, imports: string[] | undefined): boolean {
  if (req.component || req.terminal || req.hostModules.length > 0) return false;
  // Compiled ahead (the daemon's compile cache): a compile would hold every run of the pool.
  if (req.kind !== "serialized") return false;
  if (req.stdin === null || req.stdout === null || req.stderr === null) return false;
  if (!imports) return false;
  return imports.every((i) => i.startsWith("wasi_snapshot_preview1.") && POOLED_WASI.has(i.slice("wasi_snapshot_preview1.".length)));
}

/** Whether a pooled module needs the file guard in its store: it can open files, or renumber its handles. */
export function needsFileGuard(imports: string[] | undefined): boolean {
  return !!imports?.some((i) => i === "wasi_snapshot_preview1.path_open" || i === "wasi_snapshot_preview1.fd_renumber");
}

interface Pool {
  worker: Worker;
  runs: number;
  idle?: ReturnType<typeof setTimeout>;
}

/** Where the native half of the pools is, if built. */
export function poolLibPath(): string | undefined {
  const { existsSync } = require("node:fs") as typeof import("node:fs");
  return nativeLibCandidates(POOL_LIB_NAME, process.env.BUNWASI_POOL_LIB).find((p) => existsSync(p));
}

export class RunPools {
  private readonly pools: Pool[] = [];
  private readonly handlers = new Map<number, { pool: Pool; onReply: (m: PoolReply) => void }>();
  private nextId = 1;

  constructor(
    private readonly libPath: string,
    private readonly poolLib: string,
    private readonly dropFileCaps: boolean,
    private readonly max = availableParallelism(),
  ) {}

  /** Runs `req` on a pool; `onReply` gets its messages (its exit last). Returns how to wake it. */
  run(req: RunRequest, onReply: (m: PoolReply) => void): { wake(stdin?: "news" | "ended"): void } {
    const pool = this.pick();
    const id = this.nextId++;
    this.handlers.set(id, { pool, onReply });
    pool.runs++;
    clearTimeout(pool.idle);
    pool.idle = undefined;
    pool.worker.postMessage({ type: "run", id, req } satisfies PoolMessage);
    return {
      wake: (stdin?: "news" | "ended") =>
        this.handlers.has(id) && pool.worker.postMessage({ type: "wake", id, ...(stdin ? { stdin } : {}) } satisfies PoolMessage),
    };
  }

  /** The pool with the fewest runs; a new one while there are fewer than cores and none is empty. */
  private pick(): Pool {
    let best: Pool | undefined;
    for (const p of this.pools) if (!best || p.runs < best.runs) best = p;
    if (best && (best.runs === 0 || this.pools.length >= this.max)) return best;
    return this.open();
  }

  private open(): Pool {
    const worker = countRunThread(new Worker(workerScript(POOL_WORKER_SCRIPT, process.env.BUNWASI_POOL_WORKER)));
    const pool: Pool = { worker, runs: 0 };
    worker.onmessage = (ev: MessageEvent<PoolReply>) => {
      const m = ev.data;
      if (m.type === "failed") {
        this.fail(pool, m.message);
        return;
      }
      if (m.type === "thread") {
        runThreadIs(worker, m.tid);
        return;
      }
      const h = this.handlers.get(m.id);
      if (!h) return;
      if (m.type === "exit") {
        this.handlers.delete(m.id);
        this.release(pool);
      }
      h.onReply(m);
    };
    worker.onerror = (ev) => this.fail(pool, ev.message);
    worker.postMessage({
      type: "init",
      libPath: this.libPath,
      poolLib: this.poolLib,
      dropFileCaps: this.dropFileCaps,
    } satisfies PoolMessage);
    this.pools.push(pool);
    return pool;
  }

  /** A pool thread that failed ends every run it held (as an engine error) and goes. */
  private fail(pool: Pool, message: string): void {
    const i = this.pools.indexOf(pool);
    if (i >= 0) this.pools.splice(i, 1);
    pool.worker.terminate();
    for (const [id, h] of this.handlers) {
      if (h.pool !== pool) continue;
      this.handlers.delete(id);
      h.onReply({ type: "exit", id, code: 125, message: `bunwasi: run pool failed: ${message}`, stats: { instantiateMs: 0, runMs: 0 } });
    }
  }

  private release(pool: Pool): void {
    pool.runs--;
    if (pool.runs > 0) return;
    pool.idle = setTimeout(() => {
      if (pool.runs > 0) return;
      const i = this.pools.indexOf(pool);
      if (i >= 0) this.pools.splice(i, 1);
      pool.worker.terminate();
    }, POOL_IDLE_MS);
    pool.idle.unref?.();
  }
}
