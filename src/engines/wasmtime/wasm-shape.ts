// What a module (or component) asks of a store before it runs: how many linear memories and
// tables it makes and how large each is at start, read from its binary's sections. The store's
// limiter (./store.ts) needs it: wasmtime's limits are per memory and per table plus counts,
// so a bound on all of a container's memory together is a share per memory and per table,
// and the counts the module declares (a module cannot make more than those: the limiter then
// refuses the rest).
//
// Binary format (WebAssembly core spec 5.5; component model Binary.md), little-endian LEB128:
//   header: "\0asm", version (core: 1 0 0 0; component: 0x0d 0 1 0)
//   section: id u8, size u32, contents
//   core: import (2) entries: module name, field name, desc (1 table, 2 memory, ...);
//         table (4) and memory (5) entries; limits: flags u8 (bit 0 max, bit 2 64-bit,
//         bit 3 custom page size), min, [max], [page size log2]
//   component: core module (1) sections hold whole core modules; nested components (4) too.

/** A module's memories and tables as it declares them. */
export interface WasmShape {
  /**
   * Each linear memory's initial size in bytes. Defined ones only, as wasmtime counts them: an
   * imported one is another's (in a component, an instance's export; a module run alone
   * imports none, its link would fail).
   */
  memories: number[];
  /** Each table's initial element count (defined ones only, as memories). */
  tables: number[];
  /** Core instances it makes: 1 for a module; a component's core modules, each counted once. */
  instances: number;
  /** The functions a core module imports, as `module.name` (what a run pool must serve, ./pool.ts). */
  imports?: string[];
}

const PAGE = 65536;

class Reader {
  constructor(
    private readonly b: Uint8Array,
    public at: number,
    private readonly end: number,
  ) {}
  byte(): number {
    if (this.at >= this.end) throw new Error("truncated");
    return this.b[this.at++] as number;
  }
  /** An unsigned LEB128 (u32 or u64), as a number (exact up to 2^53, which no real size passes). */
  uleb(): number {
    let n = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      const x = this.byte();
      n += (x & 0x7f) * scale;
      if ((x & 0x80) === 0) return n;
      scale *= 128;
    }
    throw new Error("bad LEB128");
  }
  /** A signed LEB128 we only skip (a heap type's index). */
  skipSleb(): void {
    for (let i = 0; i < 10; i++) if ((this.byte() & 0x80) === 0) return;
    throw new Error("bad LEB128");
  }
  skip(n: number): void {
    if (this.at + n > this.end) throw new Error("truncated");
    this.at += n;
  }
  name(): void {
    this.skip(this.uleb());
  }
  text(): string {
    const n = this.uleb();
    const from = this.at;
    this.skip(n);
    return new TextDecoder().decode(this.b.subarray(from, from + n));
  }
  /** Limits: the initial size (in its unit: pages or elements) and the page size in bytes. */
  limits(): { min: number; pageBytes: number } {
    const flags = this.byte();
    const min = this.uleb();
    if (flags & 1) this.uleb();
    const pageBytes = flags & 8 ? 2 ** this.uleb() : PAGE;
    return { min, pageBytes };
  }
  peek(): number {
    if (this.at >= this.end) throw new Error("truncated");
    return this.b[this.at] as number;
  }
  /** A value type, reference types included: (ref null? ht) carries a heap type, the one-byte forms do not. */
  valType(): void {
    const t = this.byte();
    if (t === 0x63 || t === 0x64) this.skipSleb();
  }
  /**
   * Skips a table's initializer if it is one of the constant expressions a table takes
   * (ref.null, ref.func, global.get); false for another one, whose end only decoding finds.
   */
  skipInitializer(): boolean {
    for (;;) {
      const op = this.byte();
      if (op === 0x0b) return true;
      if (op === 0xd0) this.skipSleb();
      else if (op === 0xd2 || op === 0x23) this.uleb();
      else return false;
    }
  }
}

const CORE_VERSION = [1, 0, 0, 0];
const COMPONENT_VERSION = [0x0d, 0, 1, 0];

function headerIs(b: Uint8Array, at: number, version: number[]): boolean {
  return b[at] === 0 && b[at + 1] === 0x61 && b[at + 2] === 0x73 && b[at + 3] === 0x6d && version.every((v, i) => b[at + 4 + i] === v);
}

/** The shape of a core module or a component binary (`imports`: a core module's too); throws on a binary it cannot read. */
export function wasmShape(binary: Uint8Array, imports = false): WasmShape {
  const shape: WasmShape = { memories: [], tables: [], instances: 0 };
  if (imports && headerIs(binary, 0, CORE_VERSION)) shape.imports = [];
  addShape(binary, 0, binary.length, shape);
  return shape;
}

function addShape(b: Uint8Array, start: number, end: number, into: WasmShape): void {
  const core = headerIs(b, start, CORE_VERSION);
  if (!core && !headerIs(b, start, COMPONENT_VERSION)) throw new Error("not a wasm module or component");
  if (core) into.instances++;
  const r = new Reader(b, start + 8, end);
  while (r.at < end) {
    const id = r.byte();
    const size = r.uleb();
    const from = r.at;
    r.skip(size);
    if (core) coreSection(new Reader(b, from, from + size), id, into);
    // A component's core modules (1) and nested components (4): whole binaries.
    else if (id === 1 || id === 4) addShape(b, from, from + size, into);
  }
}

function coreSection(r: Reader, id: number, into: WasmShape): void {
  const memory = (defined: boolean) => {
    const { min, pageBytes } = r.limits();
    if (defined) into.memories.push(min * pageBytes);
  };
  const table = (defined: boolean) => {
    r.valType();
    const { min } = r.limits();
    if (defined) into.tables.push(min);
  };
  if (id === 2) {
    for (let n = r.uleb(); n > 0; n--) {
      const name = `${r.text()}.${r.text()}`;
      const kind = r.byte();
      if (kind === 0x00) {
        r.uleb();
        into.imports?.push(name);
      } else if (kind === 0x01) table(false);
      else if (kind === 0x02) memory(false);
      else if (kind === 0x03) {
        r.valType();
        r.byte();
      } else if (kind === 0x04) {
        r.byte();
        r.uleb();
      } else throw new Error(`unknown import kind ${kind}`);
    }
  } else if (id === 4) {
    for (let n = r.uleb(); n > 0; n--) {
      // 0x40 0x00: a table with an initializer expression (function references); the type follows.
      const initialized = r.peek() === 0x40;
      if (initialized) r.skip(2);
      table(true);
      if (initialized && !r.skipInitializer()) {
        // Not read further: the tables left count, at no initial size.
        for (let left = n - 1; left > 0; left--) into.tables.push(0);
        return;
      }
    }
  } else if (id === 5) {
    for (let n = r.uleb(); n > 0; n--) memory(true);
  }
}
