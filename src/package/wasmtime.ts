// The package's wasmtime entry (@bunwasi/shim/wasmtime): the wasmtime engine, libwasmtime's
// C API through bun:ffi. Importing it loads no library: only a run or a compile does, from the
// libwasmtime.so found at run time (BUNWASI_LIBWASMTIME, beside the binary, or ../lib beside
// it; see ./README.md).

export { wasmtime } from "../engines/wasmtime/index.ts";
