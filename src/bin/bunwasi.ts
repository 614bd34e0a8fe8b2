// bunwasi: the one binary every product name links to (./programs.ts). It only picks the
// program and imports that program's entry, an embedded script of its own: a shim server or an
// executor loads no code of the other programs (same start time and idle memory as a binary
// of its own), and this file imports nothing else.

import { writeSync } from "node:fs";
import { embeddedScript } from "../common/compiled.ts";
import { chooseProgram, PROGRAMS } from "./programs.ts";

const choice = chooseProgram(process.argv0, process.argv.slice(2));
if ("program" in choice) {
  const entry = PROGRAMS[choice.program]?.entry as URL;
  (import(embeddedScript(entry.href)) as Promise<{ main(argv: string[]): unknown }>)
    .then((m) => m.main(choice.args))
    .catch((e) => {
      process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exit(1);
    });
} else {
  // Synchronous: the process exits right after.
  if (choice.stdout) writeSync(1, choice.stdout);
  if (choice.stderr) writeSync(2, choice.stderr);
  process.exit(choice.exit);
}
