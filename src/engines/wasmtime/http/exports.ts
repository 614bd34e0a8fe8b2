// What a component binary exports at its top level, read from its export sections without
// loading an engine: the shim decides from it whether a component is a wasi:http service
// (served by ./serve.ts) or a command (run by ../component.ts), and which compiler's cache
// key applies. Binary format: the component model's Binary.md (sections of id 11 hold
// `exportname' sortidx externdesc?`); nested components (section 4) are skipped whole.

import { isComponentBinary, isWatComponent } from "../../engine.ts";
import { watComponentExports } from "./wat-exports.ts";

/** The interface a wasi:http service exports (any 0.2.x; wasmtime matches semver-compatibly). */
export const INCOMING_HANDLER = /^wasi:http\/incoming-handler@0\.2\.\d+$/;

/** Names the component exports at its top level; undefined if it is not a component or is malformed. */
export function componentExports(b: Uint8Array): string[] | undefined {
  if (!isComponentBinary(b)) return undefined;
  const r = new Reader(b, 8);
  const names: string[] = [];
  try {
    while (r.pos < b.length) {
      const id = r.byte();
      const size = r.u32();
      const end = r.pos + size;
      if (end > b.length) return undefined;
      if (id === 11) {
        const count = r.u32();
        for (let i = 0; i < count; i++) {
          r.byte(); // 0x00 (or 0x01, a versioned name in older encoders): the name follows either way
          names.push(r.string());
          // sortidx: a core sort is two bytes (0x00, sort), any other one byte; then the index.
          if (r.byte() === 0x00) r.byte();
          r.u32();
          // externdesc?: 0x00 none, 0x01 one follows
          if (r.byte() === 0x01) r.externDesc();
        }
      }
      r.pos = end;
    }
  } catch {
    return undefined;
  }
  return names;
}

/** A component (binary or WAT text, ./wat-exports.ts) exporting `wasi:http/incoming-handler@0.2.x`. */
export function isHttpService(b: Uint8Array): boolean {
  const names = isComponentBinary(b) ? componentExports(b) : isWatComponent(b) ? watComponentExports(b) : undefined;
  return names?.some((n) => INCOMING_HANDLER.test(n)) ?? false;
}

class Reader {
  constructor(
    private readonly b: Uint8Array,
    public pos: number,
  ) {}
  byte(): number {
    if (this.pos >= this.b.length) throw new Error("truncated");
    return this.b[this.pos++] as number;
  }
  u32(): number {
    let result = 0;
    let shift = 0;
    for (;;) {
      const x = this.byte();
      result += (x & 0x7f) * 2 ** shift;
      if ((x & 0x80) === 0) return result;
      shift += 7;
      if (shift > 35) throw new Error("bad LEB128");
    }
  }
  string(): string {
    const n = this.u32();
    if (this.pos + n > this.b.length) throw new Error("truncated");
    const s = new TextDecoder().decode(this.b.subarray(this.pos, this.pos + n));
    this.pos += n;
    return s;
  }
  /** externdesc: core module (0x00 0x11 idx), func/component/instance (sort idx), value and type bounds. */
  externDesc(): void {
    const sort = this.byte();
    if (sort === 0x00) {
      this.byte();
      this.u32();
    } else if (sort === 0x02 || sort === 0x03) {
      // valuebound / typebound: 0x00 idx, or 0x01 and a value type (LEB) / `sub resource`
      if (this.byte() === 0x00 || sort === 0x02) this.u32();
    } else {
      this.u32();
    }
  }
}
