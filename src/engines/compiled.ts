// Whether this code runs from a `bun build --compile` binary. import.meta.url cannot
// tell (with --bytecode it keeps the source path); Bun.main always names the embedded
// entry, under /$bunfs.
export const isCompiled: boolean = Bun.main.startsWith("/$bunfs/");
