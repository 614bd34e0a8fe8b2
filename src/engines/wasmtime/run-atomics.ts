// The Int32 words a run shares between the thread that owns it (WasmtimeEngine.run, where
// kills, pauses and Stats come from) and the thread that runs the module (./worker.ts,
// ./store.ts). Only Atomics touch them: the run thread may be inside wasm, a host call or
// the epoch callback at any moment.
//
//   [KILL]        the signal once killed; 0 while running
//   [PAUSED]      1 while paused (the run thread waits in the epoch callback or its sleep)
//   [MEM_PAGES]   the module's linear memory in 64 KiB pages, as last published; -1 unknown
//   [MEM_ASK]     bumped by the owner to ask for a fresh figure (then it bumps the epoch)
//   [MEM_ANSWER]  set to MEM_ASK's value by the run thread once it has published
//   [BLOCKED]     1 while the run thread sits in a wait of ours (sleep, pause): its memory
//                 cannot change, so the published figure is current and nobody need ask

export const KILL = 0;
export const PAUSED = 1;
export const MEM_PAGES = 2;
export const MEM_ASK = 3;
export const MEM_ANSWER = 4;
export const BLOCKED = 5;
const WORDS = 6;

/** The wasm page: linear memory grows in these (the default page size). */
export const WASM_PAGE = 65536;

export function newRunWords(): SharedArrayBuffer {
  const buf = new SharedArrayBuffer(WORDS * 4);
  Atomics.store(new Int32Array(buf), MEM_PAGES, -1);
  return buf;
}

/** Run thread: the module's linear memory is now `bytes`; answers any request. */
export function publishMemory(words: Int32Array, bytes: number): void {
  Atomics.store(words, MEM_PAGES, Math.ceil(bytes / WASM_PAGE));
  const asked = Atomics.load(words, MEM_ASK);
  if (Atomics.load(words, MEM_ANSWER) !== asked) {
    Atomics.store(words, MEM_ANSWER, asked);
    Atomics.notify(words, MEM_ANSWER);
  }
}

/** The published figure in bytes, or undefined while none is (not instantiated yet, a component). */
export function publishedMemory(words: Int32Array): number | undefined {
  const pages = Atomics.load(words, MEM_PAGES);
  return pages < 0 ? undefined : pages * WASM_PAGE;
}
