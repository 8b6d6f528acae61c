#!/usr/bin/env bash
# Builds the real-API test tier's binaries from Go modules into a cache keyed by version:
#   kube-apiserver  from the wrapper module in kube-apiserver/ (k8s.io/kubernetes v1.30.x
#                   plus a replace for every staging module), CGO_ENABLED=0;
#   helm            with `go install helm.sh/helm/v3/cmd/helm@<version>`.
# `build.sh cluster` also builds, from the same module and sharing its caches, what the
# one-node cluster tier (tests/cluster) adds: kube-controller-manager, kube-scheduler, kubelet, kubectl.
# Idempotent: a binary already in the cache is not rebuilt (and Go is not even needed).
# Module and build caches live beside each binary, so a fresh clone on the same machine
# (CI after a session) finds everything warm.
#
# Prints `kube-apiserver=<path>` and `helm=<path>` (and with `cluster` one line per extra
# binary) on stdout; progress goes to stderr. Go builds run niced, one package at a time
# (GOFLAGS -p=1): the machine is shared.
# Exit status 3 means "Go is not installed and a binary is missing" (the tier is skipped).
#
# Environment: COMPUTE_CTL_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/compute-ctl),
# GO (default: `go` on PATH, else /usr/local/go/bin/go).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
module="$here/kube-apiserver"

KUBE_VERSION=$(sed -n 's|^require k8s.io/kubernetes v\([0-9.]*\)$|\1|p' "$module/go.mod")
HELM_VERSION=3.22.0
cache_root=${COMPUTE_CTL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/compute-ctl}
apiserver_dir="$cache_root/apiserver/v$KUBE_VERSION"
helm_dir="$cache_root/helm/v$HELM_VERSION"
apiserver_bin="$apiserver_dir/kube-apiserver"
helm_bin="$helm_dir/helm"

find_go() {
  local go=${GO:-}
  if [ -z "$go" ]; then
    go=$(command -v go || echo /usr/local/go/bin/go)
  fi
  if [ ! -x "$go" ]; then
    echo "build.sh: Go is not installed (needed once to build kube-apiserver and helm)" >&2
    exit 3
  fi
  echo "$go"
}

# go_env DIR: run Go with its module and build caches under DIR, no cgo, no toolchain download.
go_env() {
  local dir=$1
  shift
  env CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-buildvcs=false \
    GOMODCACHE="$dir/gomodcache" GOCACHE="$dir/gocache" GOPATH="$dir/gopath" "$@"
}

# kubelet_module: a copy of the wrapper module whose k8s.io/kubernetes is replaced by a
# patched copy, for a test-only kubelet that accepts a loopback node IP (stock kubelet
# refuses `--node-ip=127.0.0.1` in validateNodeIP; Go refuses -overlay for files in the
# module cache). The one-node cluster keeps all traffic on loopback: probes, the API
# server's calls to the kubelet and hostNetwork pods' IPs all use the node IP.
# Prints the module's directory.
kubelet_module() {
  local go=$1 src dir="$apiserver_dir/kubelet-module"
  src="$(cd "$module" && go_env "$apiserver_dir" "$go" list -m -f '{{.Dir}}' k8s.io/kubernetes)"
  rm -rf "$dir"
  mkdir -p "$dir"
  cp -r "$src" "$dir/kubernetes"
  chmod -R u+w "$dir/kubernetes"
  local file="$dir/kubernetes/pkg/kubelet/kubelet_node_status.go"
  sed -i 's/if nodeIP.IsLoopback() {/if false \&\& nodeIP.IsLoopback() {/' "$file"
  grep -q 'if false && nodeIP.IsLoopback()' "$file" \
    || { echo "build.sh: the kubelet patch did not apply" >&2; return 1; }
  cp "$module/go.mod" "$module/go.sum" "$module/tools.go" "$dir/"
  echo 'replace k8s.io/kubernetes => ./kubernetes' >>"$dir/go.mod"
  echo "$dir"
}

# build_kube CMD: k8s.io/kubernetes/cmd/CMD from the wrapper module into $apiserver_dir/CMD.
build_kube() {
  local cmd=$1 bin="$apiserver_dir/$1"
  [ -x "$bin" ] && return
  local go
  go=$(find_go)
  mkdir -p "$apiserver_dir"
  local dir=$module
  if [ "$cmd" = kubelet ]; then
    dir=$(kubelet_module "$go")
  fi
  echo "build.sh: building $cmd v$KUBE_VERSION (cold: ~5-20 min on 2 cores)" >&2
  local start=$SECONDS pkg=k8s.io/component-base/version
  (
    cd "$dir"
    go_env "$apiserver_dir" nice -n 10 "$go" build -p 1 -trimpath -o "$bin.tmp" \
      -ldflags "-s -w -X $pkg.gitVersion=v$KUBE_VERSION -X $pkg.gitMajor=1 \
        -X $pkg.gitMinor=$(echo "$KUBE_VERSION" | cut -d. -f2) -X $pkg.gitTreeState=clean" \
      "k8s.io/kubernetes/cmd/$cmd"
  )
  mv "$bin.tmp" "$bin"
  echo "build.sh: $cmd built in $((SECONDS - start)) s" >&2
}

build_helm() {
  [ -x "$helm_bin" ] && return
  local go
  go=$(find_go)
  mkdir -p "$helm_dir"
  echo "build.sh: building helm v$HELM_VERSION" >&2
  local start=$SECONDS
  go_env "$helm_dir" GOBIN="$helm_dir/bin" nice -n 10 "$go" install -p 1 -trimpath -ldflags "-s -w" \
    "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"
  mv "$helm_dir/bin/helm" "$helm_bin"
  echo "build.sh: helm built in $((SECONDS - start)) s" >&2
}

mkdir -p "$cache_root"
# One builder at a time per machine (a session and its CI may overlap).
exec 9>"$cache_root/.build.lock"
flock 9
build_kube kube-apiserver
build_helm
echo "kube-apiserver=$apiserver_bin"
echo "helm=$helm_bin"
if [ "${1:-}" = cluster ]; then
  for cmd in kube-controller-manager kube-scheduler kubelet kubectl; do
    build_kube "$cmd"
    echo "$cmd=$apiserver_dir/$cmd"
  done
fi
