// Prometheus' text exposition format, version 0.0.4 (what every Prometheus scrapes, and the
// `Content-Type` below): one family per metric name, its `# HELP` and `# TYPE` lines, then its
// samples. Only what the daemon's metrics use: counters, gauges and histograms with cumulative
// buckets. Loaded only when the daemon serves metrics (./metrics-server.ts).

/** The Content-Type of a scrape's answer. */
export const EXPOSITION_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

export type Labels = Readonly<Record<string, string>>;

export interface Sample {
  labels?: Labels;
  value: number;
}

export interface HistogramSample {
  labels?: Labels;
  /** Upper bounds of the buckets, ascending, without +Inf (added here). */
  bounds: readonly number[];
  /** Observations per bucket, not cumulative: one per bound, then the ones above the last bound. */
  counts: readonly number[];
  sum: number;
}

export type Family =
  | { name: string; help: string; type: "counter" | "gauge"; samples: readonly Sample[] }
  | { name: string; help: string; type: "histogram"; samples: readonly HistogramSample[] };

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** The text of `families`, each family once, in the order given. A bad name or a repeated family throws: a bug of ours. */
export function exposition(families: readonly Family[]): string {
  const seen = new Set<string>();
  const out: string[] = [];
  for (const f of families) {
    if (!METRIC_NAME.test(f.name)) throw new Error(`metric name ${JSON.stringify(f.name)} is not valid`);
    if (seen.has(f.name)) throw new Error(`metric family ${f.name} given twice`);
    seen.add(f.name);
    out.push(`# HELP ${f.name} ${escapeHelp(f.help)}`, `# TYPE ${f.name} ${f.type}`);
    if (f.type === "histogram") for (const s of f.samples) histogramLines(f.name, s, out);
    else for (const s of f.samples) out.push(`${f.name}${labelText(s.labels)} ${formatValue(s.value)}`);
  }
  return out.length ? `${out.join("\n")}\n` : "";
}

function histogramLines(name: string, s: HistogramSample, out: string[]): void {
  if (s.counts.length !== s.bounds.length + 1)
    throw new Error(`histogram ${name}: ${s.bounds.length} bounds need ${s.bounds.length + 1} counts`);
  if (s.labels && "le" in s.labels) throw new Error(`histogram ${name}: "le" is the bucket's label`);
  let cumulative = 0;
  s.bounds.forEach((b, i) => {
    cumulative += s.counts[i] as number;
    out.push(`${name}_bucket${labelText({ ...s.labels, le: formatValue(b) })} ${cumulative}`);
  });
  cumulative += s.counts[s.bounds.length] as number;
  out.push(`${name}_bucket${labelText({ ...s.labels, le: "+Inf" })} ${cumulative}`);
  out.push(`${name}_sum${labelText(s.labels)} ${formatValue(s.sum)}`);
  out.push(`${name}_count${labelText(s.labels)} ${cumulative}`);
}

function labelText(labels: Labels | undefined): string {
  if (!labels) return "";
  const parts: string[] = [];
  for (const [k, v] of Object.entries(labels)) {
    if (!LABEL_NAME.test(k) || k.startsWith("__")) throw new Error(`label name ${JSON.stringify(k)} is not valid`);
    parts.push(`${k}="${escapeLabelValue(v)}"`);
  }
  return parts.length ? `{${parts.join(",")}}` : "";
}

/** In a label value: backslash, double quote and line feed are escaped (the format's three). */
export function escapeLabelValue(v: string): string {
  return v.replace(/[\\"\n]/g, (c) => (c === "\n" ? "\\n" : `\\${c}`));
}

/** In HELP text: backslash and line feed only (a double quote stays as it is). */
export function escapeHelp(v: string): string {
  return v.replace(/[\\\n]/g, (c) => (c === "\n" ? "\\n" : "\\\\"));
}

/** A sample value as the format spells it: Go's float syntax, +Inf, -Inf, NaN. */
export function formatValue(n: number): string {
  if (Number.isNaN(n)) return "NaN";
  if (n === Number.POSITIVE_INFINITY) return "+Inf";
  if (n === Number.NEGATIVE_INFINITY) return "-Inf";
  return String(n);
}

/**
 * A histogram observed as things happen: counts per bucket and their sum, nothing per
 * observation. `bounds` ascending.
 */
export class Histogram {
  private readonly counts: number[];
  private sum = 0;

  constructor(readonly bounds: readonly number[]) {
    for (let i = 1; i < bounds.length; i++)
      if (!((bounds[i] as number) > (bounds[i - 1] as number))) throw new Error("histogram bounds must ascend");
    this.counts = new Array(bounds.length + 1).fill(0);
  }

  observe(v: number): void {
    // A bucket counts the observations at most its bound (le: "less or equal").
    let i = 0;
    while (i < this.bounds.length && v > (this.bounds[i] as number)) i++;
    this.counts[i] = (this.counts[i] as number) + 1;
    this.sum += v;
  }

  sample(labels?: Labels): HistogramSample {
    return { ...(labels ? { labels } : {}), bounds: this.bounds, counts: [...this.counts], sum: this.sum };
  }
}
