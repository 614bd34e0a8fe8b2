// What a Create set up, undone newest first: by the Create itself when it fails part way, and
// by the container's Delete. The task pushes its own steps (work dir, rootfs, stdio, terminal)
// and hands the stack to its Instance, which pushes the undo of what it sets up in the
// runtime as it sets it up (src/task/instance.ts). A step that fails stays for a retry.

/** One step of undoing a Create, named for the log when it fails. */
export interface Undo {
  what: string;
  run: () => Promise<void>;
  /**
   * Skipped (kept for a retry) when an earlier step of the runtime failed: the work dir holds
   * the runtime options a `shim delete` needs to retry that runtime's delete (another binary,
   * another root): removed, the runtime's container would be left to no one.
   */
  needsRuntimeGone?: boolean;
  /** This step is the runtime's delete. */
  runtime?: boolean;
}

export class UndoStack {
  private steps: Undo[] = [];

  /** The undo of what was just set up: it runs before the undo of everything set up earlier. */
  push(step: Undo): void {
    this.steps.unshift(step);
  }

  /**
   * Runs every step; keeps and describes the ones that failed, and those that must wait for a
   * runtime delete that failed (Undo.needsRuntimeGone). Run again, it tries what was kept.
   */
  async run(): Promise<string[]> {
    const failed: string[] = [];
    const kept: Undo[] = [];
    let runtimeHolds = false;
    for (const undo of this.steps.splice(0)) {
      if (undo.needsRuntimeGone && runtimeHolds) {
        failed.push(`${undo.what}: kept until the runtime has deleted the container`);
        kept.push(undo);
        continue;
      }
      try {
        await undo.run();
      } catch (e) {
        failed.push(`${undo.what}: ${e instanceof Error ? e.message : String(e)}`);
        kept.push(undo);
        if (undo.runtime) runtimeHolds = true;
      }
    }
    this.steps = kept;
    return failed;
  }
}
