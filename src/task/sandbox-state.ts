// The life of one pod under containerd's Sandbox API (the `shim` sandbox controller of
// containerd 1.7+, which CRI uses for a runtime handler with `sandboxer = "shim"`), written
// out in one place as the task's is in ./state.ts: which Sandbox service call each state
// allows, what a call that succeeds makes of the state, and the code a refused call gets.
//
//   none ──CreateSandbox──▶ created ──StartSandbox──▶ ready
//                              │                        │
//                              └───StopSandbox──┬───────┘
//                                               ▼
//                                            stopped ──(Create is never taken again)
//   created, ready, stopped ──ShutdownSandbox──▶ shutdown (every call but Shutdown: NOT_FOUND)
//
// "none" is a served socket no CreateSandbox has come to yet: in shared mode every sandbox
// of the daemon serves the Sandbox service, and only a pod whose handler has the shim
// sandboxer ever calls it.
//
// Codes: a sandbox that is not there (never created, or shut down) is NOT_FOUND, which
// containerd's controller and CRI take as "already gone" on Stop, Status and Shutdown; a
// second Create is ALREADY_EXISTS; a call the state does not allow is FAILED_PRECONDITION,
// but SandboxMetrics of a stopped pod, UNAVAILABLE (see the table).

import { Code, TtrpcError } from "../ttrpc/index.ts";

export type SandboxState = "none" | "created" | "ready" | "stopped" | "shutdown";

export type SandboxCall = "create" | "start" | "platform" | "stop" | "wait" | "status" | "ping" | "shutdown" | "metrics";

interface Allowed {
  allow: true;
  to?: SandboxState;
}
interface Refused {
  allow: false;
  code: number;
  why: string;
}
type Rule = Allowed | Refused;

const ok = (to?: SandboxState): Allowed => (to ? { allow: true, to } : { allow: true });
const no = (code: number, why: string): Refused => ({ allow: false, code, why });
const gone = (why: string): Refused => no(Code.NOT_FOUND, why);
const exists = no(Code.ALREADY_EXISTS, "the sandbox was already created");

/** Every call on a sandbox that is not there. */
const absent = (why: string): Record<SandboxCall, Rule> => ({
  create: ok("created"),
  start: gone(why),
  platform: gone(why),
  stop: gone(why),
  wait: gone(why),
  status: gone(why),
  ping: gone(why),
  shutdown: gone(why),
  metrics: gone(why),
});

/** The table. Read a row as "in this state, this call …". */
export const SANDBOX_TABLE: Readonly<Record<SandboxState, Readonly<Record<SandboxCall, Rule>>>> = {
  none: absent("no CreateSandbox came for it"),
  created: {
    create: exists,
    start: ok("ready"),
    platform: ok(),
    // A Create whose Start failed: containerd stops and shuts it down.
    stop: ok("stopped"),
    wait: ok(),
    status: ok(),
    ping: ok(),
    shutdown: ok("shutdown"),
    metrics: no(Code.FAILED_PRECONDITION, "the sandbox has not started"),
  },
  ready: {
    create: exists,
    start: no(Code.FAILED_PRECONDITION, "the sandbox has already started"),
    platform: ok(),
    stop: ok("stopped"),
    wait: ok(),
    status: ok(),
    ping: ok(),
    shutdown: ok("shutdown"),
    metrics: ok(),
  },
  stopped: {
    create: exists,
    start: no(Code.FAILED_PRECONDITION, "the sandbox has stopped; a stopped sandbox does not start again"),
    platform: ok(),
    // CRI's RemovePodSandbox stops again what StopPodSandbox stopped: nothing to do.
    stop: ok(),
    wait: ok(),
    status: ok(),
    ping: ok(),
    shutdown: ok("shutdown"),
    // UNAVAILABLE, not FAILED_PRECONDITION: CRI's ListPodSandboxStats asks every pod it saw
    // ready, and fails as a whole on any other error from one that stopped meanwhile.
    metrics: no(Code.UNAVAILABLE, "the sandbox has stopped"),
  },
  shutdown: {
    ...absent("the sandbox was shut down"),
    create: no(Code.FAILED_PRECONDITION, "the sandbox was shut down; its server is going away"),
    // containerd may repeat it (a retried RemovePodSandbox): there is nothing left to do.
    shutdown: ok(),
  },
};

export function ruleFor(state: SandboxState, call: SandboxCall): Rule {
  return SANDBOX_TABLE[state][call];
}

/** The state `call` leads to from `state`; the refusal containerd gets when the state does not allow it. */
export function checkSandbox(id: string, state: SandboxState, call: SandboxCall): SandboxState {
  const rule = ruleFor(state, call);
  if (!rule.allow) throw new TtrpcError(rule.code, `${call} sandbox ${id}: ${rule.why} (state ${state})`);
  return rule.to ?? state;
}

/** CRI's PodSandboxState by name, as containerd's CRI reads SandboxStatus's `state`. */
export function criStateOf(state: SandboxState): "SANDBOX_READY" | "SANDBOX_NOTREADY" {
  return state === "ready" ? "SANDBOX_READY" : "SANDBOX_NOTREADY";
}
