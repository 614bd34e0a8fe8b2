// What a component in WAT text exports at its top level, without an engine: the same answer
// ./exports.ts reads from a binary, for a service given as text (`(component …)`). The shim
// asks before any library is loaded (the compile cache key, the executor's choice of signal
// handling), and converting text needs libwasmtime (wasmtime_wat2wasm), so the text is read
// here: tokens (strings, `$ids`, comments, annotations), then the top-level forms.
//
// A component's exports, in the component model's text format (Explainer.md):
//   (export $id? "name" (sort idx) externtype?)      a field of the component
//   (instance $id? (export "name") … (instantiate …)) an inline export of a definition
// An inline export is an `(export "name")` with nothing after the name; an export inside a
// nested definition (a component's or instance type's own) always names what it exports,
// and sits one level deeper, so neither is mistaken for the outer component's.

import { isWatComponent } from "../../engine.ts";

type Node = { list: Node[] } | { atom: string } | { str: string };

/** Names the component text exports at its top level; undefined if it is not component text or does not tokenize. */
export function watComponentExports(b: Uint8Array): string[] | undefined {
  if (!isWatComponent(b)) return undefined;
  let forms: Node[];
  try {
    forms = parse(new TextDecoder("utf-8", { fatal: true }).decode(b));
  } catch {
    return undefined;
  }
  const top = forms[0];
  if (forms.length !== 1 || !top || !("list" in top) || atomOf(top.list[0]) !== "component") return undefined;
  const names: string[] = [];
  for (const field of top.list.slice(1)) {
    if (!("list" in field)) continue;
    if (atomOf(field.list[0]) === "export") {
      const name = field.list.find((n) => "str" in n);
      if (name && "str" in name) names.push(name.str);
      continue;
    }
    for (const inner of field.list) {
      if (!("list" in inner) || inner.list.length !== 2 || atomOf(inner.list[0]) !== "export") continue;
      const name = inner.list[1];
      if (name && "str" in name) names.push(name.str);
    }
  }
  return names;
}

const atomOf = (n: Node | undefined) => (n && "atom" in n ? n.atom : undefined);

/** The text's forms; throws on what is not WAT's token syntax (an unclosed string or paren). */
function parse(text: string): Node[] {
  const stack: Node[][] = [[]];
  let i = 0;
  const push = (n: Node) => (stack[stack.length - 1] as Node[]).push(n);
  while (i < text.length) {
    const c = text[i] as string;
    if (c === " " || c === "\t" || c === "\n" || c === "\r") {
      i++;
    } else if (text.startsWith(";;", i)) {
      const nl = text.indexOf("\n", i);
      i = nl < 0 ? text.length : nl + 1;
    } else if (text.startsWith("(;", i)) {
      i = blockCommentEnd(text, i);
    } else if (c === "(") {
      stack.push([]);
      i++;
    } else if (c === ")") {
      const list = stack.pop();
      if (!list || stack.length === 0) throw new Error("unbalanced )");
      push({ list });
      i++;
    } else if (c === '"') {
      const s = readString(text, i);
      push({ str: s.value });
      i = s.end;
    } else {
      // An atom (keyword, number, `$id`), which may be a quoted id: $"…".
      let j = i;
      if (text.startsWith('$"', i)) j = readString(text, i + 1).end;
      else while (j < text.length && !/[\s()"]/.test(text[j] as string) && !text.startsWith(";;", j)) j++;
      push({ atom: text.slice(i, j) });
      i = j;
    }
  }
  if (stack.length !== 1) throw new Error("unclosed (");
  return stack[0] as Node[];
}

/** Block comments nest: `(; (; ;) ;)`. */
function blockCommentEnd(text: string, start: number): number {
  let depth = 0;
  let i = start;
  while (i < text.length) {
    if (text.startsWith("(;", i)) {
      depth++;
      i += 2;
    } else if (text.startsWith(";)", i)) {
      depth--;
      i += 2;
      if (depth === 0) return i;
    } else i++;
  }
  throw new Error("unclosed block comment");
}

/** A string at `start` (its opening quote): its value (escapes decoded, as UTF-8 bytes) and the index after it. */
function readString(text: string, start: number): { value: string; end: number } {
  const bytes: number[] = [];
  const enc = new TextEncoder();
  let i = start + 1;
  while (i < text.length) {
    const c = text[i] as string;
    if (c === '"') return { value: new TextDecoder().decode(new Uint8Array(bytes)), end: i + 1 };
    if (c !== "\\") {
      const cp = text.codePointAt(i) as number;
      const ch = String.fromCodePoint(cp);
      bytes.push(...enc.encode(ch));
      i += ch.length;
      continue;
    }
    const e = text[i + 1];
    const simple: Record<string, number> = { t: 9, n: 10, r: 13, '"': 34, "'": 39, "\\": 92 };
    if (e !== undefined && e in simple) {
      bytes.push(simple[e] as number);
      i += 2;
    } else if (e === "u" && text[i + 2] === "{") {
      const close = text.indexOf("}", i + 3);
      if (close < 0) throw new Error("bad \\u escape");
      bytes.push(...enc.encode(String.fromCodePoint(Number.parseInt(text.slice(i + 3, close).replace(/_/g, ""), 16))));
      i = close + 1;
    } else if (e !== undefined && /^[0-9a-fA-F]{2}$/.test(text.slice(i + 1, i + 3))) {
      bytes.push(Number.parseInt(text.slice(i + 1, i + 3), 16));
      i += 3;
    } else throw new Error("bad escape");
  }
  throw new Error("unclosed string");
}
