// Prometheus text format 0.0.4 as the daemon writes it (src/daemon/exposition.ts): HELP and
// TYPE lines, the escaping of label values and HELP text, special values, and histograms'
// cumulative buckets with _sum and _count. The e2e suite (shared-metrics) has a scrape parsed
// by Prometheus' own parser.
import { expect, test } from "bun:test";
import { escapeHelp, escapeLabelValue, exposition, formatValue, Histogram } from "../../../src/daemon/exposition.ts";

test("a family: HELP, TYPE, then its samples with their labels", () => {
  const text = exposition([
    { name: "x_total", help: "Things.", type: "counter", samples: [{ value: 3 }] },
    {
      name: "y",
      help: "Per container.",
      type: "gauge",
      samples: [
        { labels: { namespace: "k8s.io", id: "a" }, value: 1.5 },
        { labels: { namespace: "k8s.io", id: "b" }, value: 0 },
      ],
    },
    { name: "empty", help: "None yet.", type: "gauge", samples: [] },
  ]);
  expect(text).toBe(
    [
      "# HELP x_total Things.",
      "# TYPE x_total counter",
      "x_total 3",
      "# HELP y Per container.",
      "# TYPE y gauge",
      'y{namespace="k8s.io",id="a"} 1.5',
      'y{namespace="k8s.io",id="b"} 0',
      "# HELP empty None yet.",
      "# TYPE empty gauge",
      "",
    ].join("\n"),
  );
});

test("label values escape backslash, double quote and line feed; HELP escapes backslash and line feed only", () => {
  expect(escapeLabelValue('a\\b"c\nd')).toBe('a\\\\b\\"c\\nd');
  expect(escapeHelp('say "x"\\y\nz')).toBe('say "x"\\\\y\\nz');
  const text = exposition([{ name: "m", help: 'a "b"\\\nc', type: "gauge", samples: [{ labels: { id: 'q"\\\n' }, value: 1 }] }]);
  expect(text).toBe('# HELP m a "b"\\\\\\nc\n# TYPE m gauge\nm{id="q\\"\\\\\\n"} 1\n');
  // Other characters (unicode, braces, commas, equals) pass as they are.
  expect(escapeLabelValue("ä{},= ")).toBe("ä{},= ");
});

test("special values as the format spells them", () => {
  expect(formatValue(Number.POSITIVE_INFINITY)).toBe("+Inf");
  expect(formatValue(Number.NEGATIVE_INFINITY)).toBe("-Inf");
  expect(formatValue(Number.NaN)).toBe("NaN");
  expect(formatValue(1e21)).toBe("1e+21");
  expect(formatValue(-0.25)).toBe("-0.25");
});

test("a histogram: cumulative buckets up to +Inf, _sum, _count; le after the sample's labels", () => {
  const h = new Histogram([0.25, 0.5, 1]);
  for (const v of [0.125, 0.25, 0.375, 0.75, 0.75, 3]) h.observe(v);
  const text = exposition([{ name: "lat_seconds", help: "Latency.", type: "histogram", samples: [h.sample({ pod: "p" })] }]);
  expect(text).toBe(
    [
      "# HELP lat_seconds Latency.",
      "# TYPE lat_seconds histogram",
      // An observation equal to a bound is in that bucket (le: less or equal).
      'lat_seconds_bucket{pod="p",le="0.25"} 2',
      'lat_seconds_bucket{pod="p",le="0.5"} 3',
      'lat_seconds_bucket{pod="p",le="1"} 5',
      'lat_seconds_bucket{pod="p",le="+Inf"} 6',
      'lat_seconds_sum{pod="p"} 5.25',
      'lat_seconds_count{pod="p"} 6',
      "",
    ].join("\n"),
  );
  // Empty: every bucket 0, as Prometheus expects a histogram with no observation.
  expect(exposition([{ name: "h", help: "H.", type: "histogram", samples: [new Histogram([1]).sample()] }])).toBe(
    '# HELP h H.\n# TYPE h histogram\nh_bucket{le="1"} 0\nh_bucket{le="+Inf"} 0\nh_sum 0\nh_count 0\n',
  );
});

test("names, bounds and families a scraper would reject are our bug: thrown, not written", () => {
  expect(() => exposition([{ name: "bad-name", help: "", type: "gauge", samples: [] }])).toThrow("metric name");
  expect(() => exposition([{ name: "m", help: "", type: "gauge", samples: [{ labels: { "bad-label": "x" }, value: 1 }] }])).toThrow(
    "label name",
  );
  expect(() => exposition([{ name: "m", help: "", type: "gauge", samples: [{ labels: { __name__: "x" }, value: 1 }] }])).toThrow(
    "label name",
  );
  const twice = { name: "m", help: "", type: "gauge" as const, samples: [] };
  expect(() => exposition([twice, twice])).toThrow("given twice");
  expect(() => new Histogram([1, 1])).toThrow("ascend");
  expect(() => exposition([{ name: "h", help: "", type: "histogram", samples: [new Histogram([1]).sample({ le: "x" })] }])).toThrow(
    '"le" is the bucket\'s label',
  );
});
