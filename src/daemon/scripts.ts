// The parts of the daemon it loads by path, named once: a `bun build --compile` binary of the
// daemon must carry each as an extra entry point (scripts/build-shim.sh), as it carries the
// engine's Worker scripts (../common/compiled.ts finds them).

/** The metrics endpoint (./metrics-server.ts): loaded only with --metrics-address. */
export const METRICS_SCRIPT = new URL("./metrics-server.ts", import.meta.url);

/** Every script above. */
export const DAEMON_SCRIPTS: readonly URL[] = [METRICS_SCRIPT];
