// The life of one task (a container's init process), written out in one place: which
// Task service calls each state allows, what a call that succeeds makes of the state, and
// the error a call gets where it is not allowed. The service asks this table before it
// does anything; nothing else decides whether a call may run.
//
//   created ──Start──▶ running ──Pause──▶ paused
//      │                 │   ◀──Resume──   │
//      │ (exit)          │ (exit)          │ (exit)
//      ▼                 ▼                 ▼
//   stopped ◀────────────┴─────────────────┘
//      │ Delete (created, stopped)
//      ▼
//   deleted
//
// Exec processes of a task have a table of their own, at the end of this file.
//
// Codes follow containerd's runc-v2 shim where it uses one (a missing container, a kill of
// a finished or deleted process, a delete of a deleted one: NOT_FOUND), and runwasi's task
// state machine elsewhere (a call the state does not allow: FAILED_PRECONDITION; runc-v2
// answers those with a plain error, which arrives as UNKNOWN). Messages name the state.

import { Code, TtrpcError } from "../ttrpc/index.ts";
import { Status } from "./gen/containerd/types/task/task.ts";

export type TaskState = "created" | "running" | "paused" | "stopped" | "deleted";

/** The Task service calls that concern one existing task. */
export type TaskCall =
  | "start"
  | "kill"
  | "pause"
  | "resume"
  | "delete"
  | "wait"
  | "state"
  | "pids"
  | "stats"
  | "closeIO"
  | "exec"
  | "resizePty"
  | "update"
  | "checkpoint";

/** A call the state allows; `to` is the state once it has succeeded (absent: unchanged). */
interface Allowed<S extends string = TaskState> {
  allow: true;
  to?: S;
}
/** A call the state refuses, with the code and the reason containerd gets. */
interface Refused {
  allow: false;
  code: number;
  why: string;
}
type Rule<S extends string = TaskState> = Allowed<S> | Refused;

const ok = <S extends string = TaskState>(to?: S): Allowed<S> => (to ? { allow: true, to } : { allow: true });
const no = (code: number, why: string): Refused => ({ allow: false, code, why });
const precondition = (why: string) => no(Code.FAILED_PRECONDITION, why);
const unimplemented = (what: string) => no(Code.UNIMPLEMENTED, `${what} is not supported by this shim`);

/** Calls that the shim does not implement, in whatever state. */
const UNIMPLEMENTED: Pick<Record<TaskCall, Rule>, "checkpoint"> = {
  checkpoint: unimplemented("Checkpoint"),
};

/** The table. Read a row as "in this state, this call …". */
export const TASK_TABLE: Readonly<Record<TaskState, Readonly<Record<TaskCall, Rule>>>> = {
  created: {
    start: ok("running"),
    // runc's init is waiting for start; a signal reaches it (containerd kills before a delete).
    kill: ok(),
    pause: precondition("cannot pause a task that was never started"),
    resume: precondition("cannot resume a task that was never started"),
    // The init never ran the workload: the runtime removes it, its exit is then reported.
    delete: ok("deleted"),
    wait: ok(),
    state: ok(),
    pids: ok(),
    stats: ok(),
    closeIO: ok(),
    // As runc-v2: an exec may be added before the init runs (its Start then runs it).
    exec: ok(),
    // Without a terminal there is nothing to resize: a no-op, as runc-v2.
    resizePty: ok(),
    // runc-v2 updates a created container too: its cgroup exists from create on.
    update: ok(),
    ...UNIMPLEMENTED,
  },
  running: {
    start: precondition("already started"),
    kill: ok(),
    pause: ok("paused"),
    resume: precondition("not paused"),
    delete: precondition("kill it first"),
    wait: ok(),
    state: ok(),
    pids: ok(),
    stats: ok(),
    closeIO: ok(),
    exec: ok(),
    resizePty: ok(),
    update: ok(),
    ...UNIMPLEMENTED,
  },
  paused: {
    start: precondition("already started"),
    // A frozen process gets the signal once thawed; SIGKILL ends it even frozen.
    kill: ok(),
    pause: precondition("already paused"),
    resume: ok("running"),
    delete: precondition("kill it first"),
    wait: ok(),
    state: ok(),
    pids: ok(),
    stats: ok(),
    closeIO: ok(),
    // runc-v2: "cannot exec in a paused state" (the runtime could not enter frozen namespaces).
    exec: precondition("cannot exec in a paused container"),
    resizePty: ok(),
    // The cgroup stays while frozen; runc-v2 allows it.
    update: ok(),
    ...UNIMPLEMENTED,
  },
  stopped: {
    start: precondition("it has exited"),
    // runc-v2's answer, which `ctr task kill` shows: "process already finished: not found".
    kill: no(Code.NOT_FOUND, "process already finished"),
    pause: precondition("it has exited"),
    resume: precondition("it has exited"),
    delete: ok("deleted"),
    wait: ok(),
    state: ok(),
    // Nothing left to list: an empty list, as runc's ps of a stopped container gives.
    pids: ok(),
    stats: no(Code.NOT_FOUND, "it has exited: no cgroup to measure"),
    closeIO: ok(),
    // Its namespaces are gone with the init: nothing to run a process in.
    exec: precondition("it has exited: cannot exec in a stopped container"),
    // As runc-v2's init: no state check. `ctr run -t` sends its first resize after Start, which
    // a short-lived process beats; refusing would only make ctr log an error.
    resizePty: ok(),
    // runc-v2: "cannot update a stopped container"; the cgroup is about to go.
    update: precondition("it has exited: no cgroup to update"),
    ...UNIMPLEMENTED,
  },
  // Only seen by calls that found the task just before its Delete finished.
  deleted: {
    start: precondition("it is deleted"),
    kill: no(Code.NOT_FOUND, "cannot kill a deleted process"),
    pause: precondition("it is deleted"),
    resume: precondition("it is deleted"),
    delete: no(Code.NOT_FOUND, "cannot delete a deleted process"),
    wait: ok(),
    state: ok(),
    pids: ok(),
    stats: no(Code.NOT_FOUND, "it is deleted: no cgroup to measure"),
    closeIO: ok(),
    exec: precondition("it is deleted"),
    resizePty: precondition("it is deleted"),
    update: precondition("it is deleted"),
    ...UNIMPLEMENTED,
  },
};

/** Kill with `all`: also fine once stopped (other processes of the container may be left). */
const KILL_ALL_WHEN_STOPPED: Allowed = ok();

/** The rule for `call` in `state`. */
export function ruleFor(state: TaskState, call: TaskCall, opts: { all?: boolean } = {}): Rule {
  if (call === "kill" && opts.all && state === "stopped") return KILL_ALL_WHEN_STOPPED;
  return TASK_TABLE[state][call];
}

/** Throws the table's error unless `call` is allowed in `state`; returns the state it leads to. */
export function check(id: string, state: TaskState, call: TaskCall, opts: { all?: boolean } = {}): TaskState {
  const rule = ruleFor(state, call, opts);
  if (!rule.allow) throw refusal(id, state, call, rule);
  return rule.to ?? state;
}

export function refusal(id: string, state: TaskState, call: TaskCall, rule: Refused): TtrpcError {
  if (rule.code === Code.UNIMPLEMENTED) return new TtrpcError(rule.code, rule.why);
  return new TtrpcError(rule.code, `${call} container ${id}: task is ${state}: ${rule.why}`);
}

/**
 * Calls that change the state through the runtime: one at a time per task. Another one while
 * one is under way is refused (a second Delete instead joins the first: see the service).
 */
export const EXCLUSIVE: ReadonlySet<TaskCall> = new Set<TaskCall>(["start", "pause", "resume", "delete"]);

/** Throws unless `call` may begin now: allowed in `state`, and no other exclusive call under way. */
export function begin(id: string, state: TaskState, call: TaskCall, busy: TaskCall | null, opts: { all?: boolean } = {}): TaskState {
  const to = check(id, state, call, opts);
  if (busy !== null && EXCLUSIVE.has(call)) {
    throw new TtrpcError(Code.FAILED_PRECONDITION, `${call} container ${id}: task is ${state}: a ${busy} is under way`);
  }
  return to;
}

/** What an exit of the init process makes of each state. */
export function afterExit(state: TaskState): TaskState {
  return state === "deleted" ? "deleted" : "stopped";
}

/**
 * The state once an allowed call has finished: the table's target, unless the process exited
 * while the call ran (then it stays stopped: a Start that raced the exit does not revive it).
 */
export function afterCall(current: TaskState, target: TaskState): TaskState {
  if (current === "stopped" && target !== "deleted") return "stopped";
  if (current === "deleted") return "deleted";
  return target;
}

/** The status containerd's State shows; `pausing` while a Pause is under way. */
export function statusOf(state: TaskState, pausing: boolean): Status {
  switch (state) {
    case "created":
      return Status.CREATED;
    case "running":
      return pausing ? Status.PAUSING : Status.RUNNING;
    case "paused":
      return Status.PAUSED;
    case "stopped":
    case "deleted":
      // runc-v2 reports a deleted process as stopped too.
      return Status.STOPPED;
  }
}

// ---------------------------------------------------------------------------------------------
// Exec processes: the other processes of a task (`ctr task exec`, `kubectl exec`). Each has a
// life of its own, shorter than its task's, and is named by (container id, exec id):
//
//   created ──Start──▶ running
//      │ (exit)          │ (exit)
//      ▼                 ▼
//   stopped ◀────────────┘
//      │ Delete (created, stopped)
//      ▼
//   deleted   (forgotten: a later call names no process, NOT_FOUND)
//
// Exec adds one in `created` (the task table's `exec` cell says in which task states); Start
// runs it through the runtime. Codes and wording as runc-v2's execState (pkg/process).
// A call for an exec also depends on its task: see execRefusedByTask.

export type ExecState = "created" | "running" | "stopped" | "deleted";

/** The Task service calls that concern one exec process. */
export type ExecCall = "start" | "kill" | "delete" | "wait" | "state" | "closeIO" | "resizePty";

const done = ok<ExecState>;

export const EXEC_TABLE: Readonly<Record<ExecState, Readonly<Record<ExecCall, Rule<ExecState>>>>> = {
  created: {
    start: done("running"),
    // runc-v2: "process not created" (no pid to signal yet).
    kill: precondition("process not created"),
    delete: done("deleted"),
    wait: done(),
    state: done(),
    closeIO: done(),
    resizePty: done(),
  },
  running: {
    start: precondition("already started"),
    kill: done(),
    delete: precondition("cannot delete a running process"),
    wait: done(),
    state: done(),
    closeIO: done(),
    resizePty: done(),
  },
  stopped: {
    start: precondition("it has exited"),
    kill: no(Code.NOT_FOUND, "process already finished"),
    delete: done("deleted"),
    wait: done(),
    state: done(),
    closeIO: done(),
    resizePty: precondition("it has exited: no terminal to resize"),
  },
  // Only seen by calls that found the exec just before its Delete finished.
  deleted: {
    start: precondition("it is deleted"),
    kill: no(Code.NOT_FOUND, "cannot kill a deleted process"),
    delete: no(Code.NOT_FOUND, "cannot delete a deleted process"),
    wait: done(),
    state: done(),
    closeIO: done(),
    resizePty: precondition("it is deleted"),
  },
};

/**
 * Where the task's state refuses a call for one of its execs, whatever the exec's own state:
 * an exec is only started while its task can still run it (runc-v2: "container … init process
 * is not running" once the init has exited; a frozen container cannot be entered either).
 */
export function execRefusedByTask(task: TaskState, initExited: boolean, call: ExecCall): Refused | null {
  if (call !== "start") return null;
  if (initExited || task === "stopped" || task === "deleted") return precondition("the container's init process is not running");
  if (task === "paused") return precondition("cannot start an exec in a paused container");
  return null;
}

/** Throws the table's error unless `call` may run for exec `execId` now; returns the state it leads to. */
export function checkExec(
  id: string,
  execId: string,
  task: TaskState,
  initExited: boolean,
  state: ExecState,
  call: ExecCall,
  busy: ExecCall | null,
): ExecState {
  const byTask = execRefusedByTask(task, initExited, call);
  if (byTask) throw new TtrpcError(byTask.code, `${call} exec ${execId} in container ${id}: task is ${task}: ${byTask.why}`);
  const rule = EXEC_TABLE[state][call];
  if (!rule.allow) throw new TtrpcError(rule.code, `${call} exec ${execId} in container ${id}: process is ${state}: ${rule.why}`);
  if (busy !== null && EXEC_EXCLUSIVE.has(call)) {
    throw new TtrpcError(
      Code.FAILED_PRECONDITION,
      `${call} exec ${execId} in container ${id}: process is ${state}: a ${busy} is under way`,
    );
  }
  return rule.to ?? state;
}

/** Exec calls that change its state through the runtime: one at a time per exec. */
export const EXEC_EXCLUSIVE: ReadonlySet<ExecCall> = new Set<ExecCall>(["start", "delete"]);

/** What an exit of the exec's process makes of its state (as afterExit for the task). */
export function execAfterExit(state: ExecState): ExecState {
  return state === "deleted" ? "deleted" : "stopped";
}

/** The state once an allowed exec call finished: an exit meanwhile wins (as afterCall). */
export function execAfterCall(current: ExecState, target: ExecState): ExecState {
  if (current === "stopped" && target !== "deleted") return "stopped";
  if (current === "deleted") return "deleted";
  return target;
}

/** The status containerd's State shows for an exec: its own, or its container's while paused (runc-v2). */
export function execStatusOf(state: ExecState, task: TaskState, pausing: boolean): Status {
  if (state !== "stopped" && state !== "deleted") {
    if (task === "paused") return Status.PAUSED;
    if (pausing) return Status.PAUSING;
  }
  switch (state) {
    case "created":
      return Status.CREATED;
    case "running":
      return Status.RUNNING;
    case "stopped":
    case "deleted":
      return Status.STOPPED;
  }
}
