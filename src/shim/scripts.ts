// The parts of a shim binary that runShim (./shim.ts) loads by path, named once: by runShim
// and by the shim builder (src/package/build.ts), which makes them extra entry points of a
// `bun build --compile` binary so that the binary carries them (../common/compiled.ts).

/** The command line: start, delete, -info, -v (./command-line.ts). */
export const COMMAND_LINE_SCRIPT = new URL("./command-line.ts", import.meta.url);
/** The shim server, one per pod (./serve.ts). */
export const SERVE_SCRIPT = new URL("./serve.ts", import.meta.url);

/** Every script above: what a binary of runShim must embed. */
export const SHIM_SCRIPTS: readonly URL[] = [COMMAND_LINE_SCRIPT, SERVE_SCRIPT];
