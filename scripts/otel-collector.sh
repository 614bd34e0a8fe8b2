#!/usr/bin/env bash
# Builds a small OpenTelemetry Collector (the OTLP receiver and the file exporter, nothing else)
# from the Go module proxy into build/otelcol/<version>/otelcol, for test/e2e/traces.test.ts:
# a real collector the shims export their spans to. Idempotent: an existing binary is kept.
# Prints the binary's path.
#
#   bash scripts/otel-collector.sh
#
# How: the collector is a Go program assembled from component modules. The upstream `builder`
# (go.opentelemetry.io/collector/cmd/builder) generates a main package and builds it; this does
# the same by hand with two small files written below (the shape of the builder's templates),
# so the builder itself need not be built. `go mod tidy` resolves the components' dependencies
# through the module proxy (checked against sum.golang.org); CGO_ENABLED=0, -trimpath.
#
# Time on a 2-core machine shared with test runs (one compile job with GO_BUILD_JOBS=1):
# 99 s with the module cache holding containerd's dependencies (about 90 more modules to
# download); longer with an empty build cache.
set -euo pipefail
cd "$(dirname "$0")/.."

# Core components (go.opentelemetry.io/collector) and the contrib file exporter share the
# v0.x release number; the confmap providers are the stable (v1.x) modules of that release.
CORE=v0.165.0
STABLE=v1.71.0
CONTRIB=v0.165.0

export PATH="$PATH:/usr/local/go/bin"
export GOFLAGS=-mod=mod CGO_ENABLED=0
log() { echo "otel-collector: $*" >&2; }

out=$PWD/build/otelcol/$CORE/otelcol
if [[ -x $out ]]; then
  echo "$out"
  exit 0
fi
t0=$SECONDS
tmp=$(mktemp -d)
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
log "building the collector $CORE (otlp receiver, file exporter)"
cat >"$tmp/go.mod" <<MOD
module bunwasi.test/otelcol

go 1.24

require (
	go.opentelemetry.io/collector/component $CORE
	go.opentelemetry.io/collector/confmap $STABLE
	go.opentelemetry.io/collector/confmap/provider/envprovider $STABLE
	go.opentelemetry.io/collector/confmap/provider/fileprovider $STABLE
	go.opentelemetry.io/collector/exporter $CORE
	go.opentelemetry.io/collector/otelcol $CORE
	go.opentelemetry.io/collector/receiver $CORE
	go.opentelemetry.io/collector/receiver/otlpreceiver $CORE
	go.opentelemetry.io/collector/service $CORE
	github.com/open-telemetry/opentelemetry-collector-contrib/exporter/fileexporter $CONTRIB
)
MOD
cat >"$tmp/main.go" <<'GO'
// An OpenTelemetry Collector with one receiver (OTLP) and one exporter (file): what the
// trace tests need to see the spans a shim sends, as an operator's collector would get them.
package main

import (
	"os"

	"github.com/open-telemetry/opentelemetry-collector-contrib/exporter/fileexporter"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/provider/envprovider"
	"go.opentelemetry.io/collector/confmap/provider/fileprovider"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/otelcol"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/otlpreceiver"
	"go.opentelemetry.io/collector/service/telemetry/otelconftelemetry"
)

func components() (otelcol.Factories, error) {
	f := otelcol.Factories{Telemetry: otelconftelemetry.NewFactory()}
	var err error
	if f.Receivers, err = otelcol.MakeFactoryMap[receiver.Factory](otlpreceiver.NewFactory()); err != nil {
		return otelcol.Factories{}, err
	}
	if f.Exporters, err = otelcol.MakeFactoryMap[exporter.Factory](fileexporter.NewFactory()); err != nil {
		return otelcol.Factories{}, err
	}
	return f, nil
}

func main() {
	set := otelcol.CollectorSettings{
		BuildInfo: component.BuildInfo{Command: "otelcol", Description: "bunwasi test collector", Version: "test"},
		Factories: components,
		ConfigProviderSettings: otelcol.ConfigProviderSettings{
			ResolverSettings: confmap.ResolverSettings{
				// The env provider too: the resolver's default scheme (${VAR}) must have one.
				ProviderFactories: []confmap.ProviderFactory{fileprovider.NewFactory(), envprovider.NewFactory()},
			},
		},
	}
	if err := otelcol.NewCommand(set).Execute(); err != nil {
		os.Exit(1)
	}
}
GO
(
  cd "$tmp"
  # -e: a test-only dependency of the file exporter is not on the proxy (403); the build needs
  # none of them.
  go mod tidy -e >&2
  # GO_BUILD_JOBS=1 keeps the build to one compile job on a machine shared with test runs.
  go build ${GO_BUILD_JOBS:+-p "$GO_BUILD_JOBS"} -trimpath -ldflags "-s -w" -o "$tmp/otelcol" .
)
"$tmp/otelcol" --version >&2
mkdir -p "$(dirname "$out")"
mv "$tmp/otelcol" "$out"
log "built in $((SECONDS - t0)) s"
echo "$out"
