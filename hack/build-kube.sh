#!/usr/bin/env bash
# Build the upstream control-plane binaries Standby's local clusters run on:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok; kubectl (same module
# graph; it brings kustomize) for applying the shipped manifests; and Toxiproxy, the
# fault-injection proxy the fault tests put between a service and what it talks to; and the
# Prometheus Operator's CRDs the monitoring component is installed against, and promtool, which
# checks and unit-tests the alert rules; and cert-manager's CRDs (Certificate, Issuer) the broker's
# certificate component is installed against.
#
# Everything is built from the upstream Go modules through the Go module proxy (no prebuilt
# downloads) into a cache outside the checkout, so only the first run on a machine pays for it:
#
#   ${STANDBY_KUBE_CACHE:-~/.cache/standby}/kube-<version>/bin/{etcd,kube-apiserver,...}
#
# Binaries already present are skipped. Set STANDBY_KUBE_VERSION to pin another release.
set -euo pipefail

KUBE_VERSION="${STANDBY_KUBE_VERSION:-v1.36.3}"
ETCD_VERSION="${STANDBY_ETCD_VERSION:-v3.6.8}"
KWOK_VERSION="${STANDBY_KWOK_VERSION:-v0.8.0}"
TOXIPROXY_VERSION="${STANDBY_TOXIPROXY_VERSION:-v2.12.0}"
PROMETHEUS_OPERATOR_VERSION="${STANDBY_PROMETHEUS_OPERATOR_VERSION:-v0.85.0}"
PROMETHEUS_VERSION="${STANDBY_PROMETHEUS_VERSION:-v0.316.0}"  # Prometheus 3.16's module tag
CERT_MANAGER_VERSION="${STANDBY_CERT_MANAGER_VERSION:-v1.16.2}"
CACHE_ROOT="${STANDBY_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/standby}"
OUT="$CACHE_ROOT/kube-$KUBE_VERSION"
BIN="$OUT/bin"
WORK="$OUT/src"
# Stable homes for Go's caches so later sessions and CI on this machine reuse them.
export GOMODCACHE="${GOMODCACHE:-$CACHE_ROOT/go/mod}"
export GOCACHE="${GOCACHE:-$CACHE_ROOT/go/build}"
export GOFLAGS="-mod=mod -buildvcs=false"
export CGO_ENABLED=0
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

log() { printf '[build-kube %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v go >/dev/null || die "Go is not installed (need go >= 1.26 for Kubernetes $KUBE_VERSION)"
mkdir -p "$BIN" "$WORK"

# The staging modules k8s.io/kubernetes requires at v0.0.0; each is replaced by the published
# v0.<minor>.<patch> tag that matches the release.
STAGING_VERSION="v0.${KUBE_VERSION#v1.}"

want() {  # want <binary>: true when it still has to be built
  [[ -x "$BIN/$1" ]] && { log "$1: cached"; return 1; }
  return 0
}

build_kubernetes() {
  local targets=()
  for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    want "$b" && targets+=("$b")
  done
  ((${#targets[@]})) || return 0
  local dir="$WORK/kubernetes"
  mkdir -p "$dir"
  log "resolving k8s.io/kubernetes@$KUBE_VERSION (staging modules at $STAGING_VERSION)"
  local gomod
  gomod=$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [[ -f "$gomod" ]] || die "could not download k8s.io/kubernetes@$KUBE_VERSION from the module proxy"
  local go_line
  go_line=$(grep -m1 '^go ' "$gomod")
  {
    echo "module standby.dev/kubebuild"
    echo
    echo "$go_line"
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    echo "replace ("
    grep -oE '^\s+k8s\.io/[a-z0-9-]+ v0\.0\.0$' "$gomod" | awk -v v="$STAGING_VERSION" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
  } >"$dir/go.mod"
  cat >"$dir/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  (cd "$dir" && log "go mod tidy (downloads ~1 GB of modules on a cold machine)" && go mod tidy -e >/dev/null 2>"$dir/tidy.log") \
    || { cat "$dir/tidy.log" >&2; die "go mod tidy failed for kubernetes"; }
  for b in "${targets[@]}"; do
    log "building $b (several minutes cold)"
    (cd "$dir" && go build -trimpath -ldflags "-s -w \
        -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION \
        -X k8s.io/component-base/version.gitMajor=1 \
        -X k8s.io/component-base/version.gitMinor=$(echo "$KUBE_VERSION" | cut -d. -f2)" \
        -o "$BIN/$b.tmp" "k8s.io/kubernetes/cmd/$b") || die "building $b failed"
    mv "$BIN/$b.tmp" "$BIN/$b"
    log "$b: built"
  done
}

build_etcd() {
  want etcd || return 0
  local dir="$WORK/etcd"
  mkdir -p "$dir"
  cat >"$dir/go.mod" <<GOMOD
module standby.dev/etcdbuild

go 1.24

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
GOMOD
  cat >"$dir/main.go" <<'GO'
// Command etcd runs the upstream etcd server: etcd's root module cannot be installed directly,
// its server module exposes etcdmain.Main.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  log "building etcd $ETCD_VERSION"
  (cd "$dir" && go mod tidy >/dev/null 2>"$dir/tidy.log") || { cat "$dir/tidy.log" >&2; die "go mod tidy failed for etcd"; }
  (cd "$dir" && go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" .) || die "building etcd failed"
  mv "$BIN/etcd.tmp" "$BIN/etcd"
  log "etcd: built"
}

kwok_stages() {
  # kwok ships its lifecycle stages (node Ready, heartbeat, pod Ready/complete/delete) as YAML in
  # its module; take the "fast" set from the same module version.
  [[ -s "$OUT/kwok-stages.yaml" ]] && { log "kwok stages: cached"; return 0; }
  local dir
  dir=$(cd "$WORK" && go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [[ -d "$dir" ]] || die "could not locate the kwok module to read its stages"
  local stage="$dir/kustomize/stage"
  for f in "$stage"/node/fast/node-initialize.yaml "$stage"/node/heartbeat/node-heartbeat.yaml \
           "$stage"/pod/fast/pod-ready.yaml "$stage"/pod/fast/pod-complete.yaml "$stage"/pod/fast/pod-delete.yaml; do
    [[ -f "$f" ]] || die "kwok stage $f missing"
    echo "---"
    cat "$f"
  done >"$OUT/kwok-stages.yaml.tmp"
  mv "$OUT/kwok-stages.yaml.tmp" "$OUT/kwok-stages.yaml"
  log "kwok stages: written"
}

build_kwok() {
  want kwok || return 0
  log "building kwok $KWOK_VERSION"
  GOBIN="$WORK/kwok-bin" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" \
    || die "building kwok failed (if it needs a newer Go: GOTOOLCHAIN=go1.27.3)"
  mv "$WORK/kwok-bin/kwok" "$BIN/kwok"
  log "kwok: built"
}

build_toxiproxy() {
  # Toxiproxy (fault-injection TCP proxy with an HTTP API) for the fault tests: cut or slow the
  # connections between a service and its API server or broker, as a real network does.
  want toxiproxy || return 0
  log "building toxiproxy $TOXIPROXY_VERSION"
  GOBIN="$WORK/toxiproxy-bin" go install -trimpath -ldflags "-s -w" \
    "github.com/Shopify/toxiproxy/v2/cmd/server@$TOXIPROXY_VERSION" || die "building toxiproxy failed"
  mv "$WORK/toxiproxy-bin/server" "$BIN/toxiproxy"
  log "toxiproxy: built"
}

build_promtool() {
  # promtool checks the alert rules and runs their unit tests (tests/monitoring/).
  want promtool || return 0
  log "building promtool $PROMETHEUS_VERSION (about 10 minutes on a cold machine)"
  GOBIN="$WORK/promtool-bin" go install -trimpath -ldflags "-s -w" \
    "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION" || die "building promtool failed"
  mv "$WORK/promtool-bin/promtool" "$BIN/promtool"
  log "promtool: built"
}

module_dir() {
  # The folder of a Go module version (fetched through the module proxy into the module cache).
  local dir
  dir=$(cd "$WORK" && go mod download -json "$1" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [[ -d "$dir" ]] || die "could not locate the module $1"
  echo "$dir"
}

monitoring_crds() {
  # The Prometheus Operator's CRDs (ServiceMonitor, PodMonitor, PrometheusRule), as its module
  # ships them, so the tests install the optional monitoring component into a real API server.
  local out="$OUT/crds/monitoring.coreos.com" dir kind
  [[ -s "$out/monitoring.coreos.com_prometheusrules.yaml" ]] && { log "monitoring CRDs: cached"; return 0; }
  dir=$(module_dir "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION")
  mkdir -p "$out"
  for kind in servicemonitors podmonitors prometheusrules; do
    cp "$dir/example/prometheus-operator-crd/monitoring.coreos.com_$kind.yaml" "$out/" \
      || die "prometheus-operator CRD $kind missing"
  done
  log "monitoring CRDs: copied"
}

certmanager_crds() {
  # cert-manager's Certificate and Issuer CRDs as its module ships them (deploy/crds), less the
  # Helm chart's templated label lines (values in {{ }} are not valid label values).
  local out="$OUT/crds/cert-manager.io" dir kind
  [[ -s "$out/crd-issuers.yaml" ]] && { log "cert-manager CRDs: cached"; return 0; }
  dir=$(module_dir "github.com/cert-manager/cert-manager@$CERT_MANAGER_VERSION")
  mkdir -p "$out"
  for kind in certificates issuers; do
    grep -v "'{{" "$dir/deploy/crds/crd-$kind.yaml" > "$out/crd-$kind.yaml" || die "cert-manager CRD $kind missing"
  done
  log "cert-manager CRDs: copied"
}

start=$(date +%s)
build_etcd
build_kubernetes
build_kwok
build_toxiproxy
build_promtool
kwok_stages
monitoring_crds
certmanager_crds
echo "$KUBE_VERSION" >"$OUT/VERSION"
log "all binaries ready in $BIN ($(( $(date +%s) - start ))s)"
echo "$BIN"
