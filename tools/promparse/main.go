// promparse reads Prometheus text exposition (format 0.0.4) on stdin with Prometheus' own
// parser (github.com/prometheus/common/expfmt) and prints the families it parsed as one JSON
// object, name to family; a parse error exits 1 with the parser's message. The e2e suite
// test/e2e/shared-metrics.test.ts checks the daemon's scrape through it.
package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

type bucket struct {
	Le    float64 `json:"le"`
	Count uint64  `json:"count"`
}

type histogram struct {
	Count   uint64   `json:"count"`
	Sum     float64  `json:"sum"`
	Buckets []bucket `json:"buckets"`
}

type metric struct {
	Labels    map[string]string `json:"labels"`
	Value     *float64          `json:"value,omitempty"`
	Histogram *histogram        `json:"histogram,omitempty"`
}

type family struct {
	Type    string   `json:"type"`
	Help    string   `json:"help"`
	Metrics []metric `json:"metrics"`
}

// JSON has no infinities: a bound of +Inf is written as the largest float.
func finite(f float64) float64 {
	if math.IsInf(f, 1) {
		return math.MaxFloat64
	}
	return f
}

func main() {
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(os.Stdin)
	if err != nil {
		fmt.Fprintf(os.Stderr, "promparse: %v\n", err)
		os.Exit(1)
	}
	out := map[string]family{}
	for name, f := range families {
		fam := family{Type: f.GetType().String(), Help: f.GetHelp()}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			one := metric{Labels: labels}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				v := m.GetCounter().GetValue()
				one.Value = &v
			case dto.MetricType_GAUGE:
				v := m.GetGauge().GetValue()
				one.Value = &v
			case dto.MetricType_UNTYPED:
				v := m.GetUntyped().GetValue()
				one.Value = &v
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				hist := &histogram{Count: h.GetSampleCount(), Sum: h.GetSampleSum()}
				for _, b := range h.GetBucket() {
					hist.Buckets = append(hist.Buckets, bucket{Le: finite(b.GetUpperBound()), Count: b.GetCumulativeCount()})
				}
				one.Histogram = hist
			}
			fam.Metrics = append(fam.Metrics, one)
		}
		out[name] = fam
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintf(os.Stderr, "promparse: %v\n", err)
		os.Exit(1)
	}
}
