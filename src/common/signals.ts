// Signal names and numbers (Linux, the same on x86_64 and aarch64 for these) and the
// shell-style status of a process a signal ended: 128 + its number.

export const SIGNALS = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGABRT: 6,
  SIGKILL: 9,
  SIGUSR1: 10,
  SIGUSR2: 12,
  SIGPIPE: 13,
  SIGALRM: 14,
  SIGTERM: 15,
  SIGCONT: 18,
  SIGSTOP: 19,
} as const;

export type SignalName = keyof typeof SIGNALS;

/** Signal number from an AbortSignal reason (number, "SIGTERM", "TERM", "15", {signal}); default SIGKILL. */
export function signalNumber(reason: unknown): number {
  if (typeof reason === "number" && Number.isInteger(reason) && reason > 0 && reason < 128) return reason;
  if (typeof reason === "string") {
    const up = reason.toUpperCase();
    const table = SIGNALS as Record<string, number>;
    const n = table[up] ?? table[`SIG${up}`];
    if (n) return n;
    if (/^\d+$/.test(reason)) return signalNumber(Number(reason));
  }
  if (reason && typeof reason === "object" && "signal" in reason) {
    return signalNumber((reason as { signal: unknown }).signal);
  }
  return SIGNALS.SIGKILL;
}

/** Exit status of a process ended by signal `sig`, as a shell reports it. */
export function signaledStatus(sig: number): number {
  return 128 + sig;
}
