# Sourced by the hack/ scripts: the Debian packages a script needs, and the Kubernetes build
# the control plane and the node share (one release for both).

# The Kubernetes release of the control plane and of the node; the two must match.
K8S_VERSION="${K8S_VERSION:-1.36.3}"

# apt_ensure PKG...: install the Debian packages not installed yet (quietly; sudo when not root).
# Sets APT_INSTALLED to the packages it installed.
apt_ensure() {
  local p sudo=""
  APT_INSTALLED=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || APT_INSTALLED+=("$p")
  done
  [ ${#APT_INSTALLED[@]} -gt 0 ] || return 0
  echo "$(basename "$0"): apt-get install ${APT_INSTALLED[*]}" >&2
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${APT_INSTALLED[@]}" >&2
}

# fetch_only: SCALELAB_FETCH_ONLY=1 makes the Go build scripts download their modules and stop
# before compiling (hack/test.sh runs them so beside the Python install, which is CPU bound).
fetch_only() { [ "${SCALELAB_FETCH_ONLY:-0}" = 1 ]; }

# The Go tools built from the module proxy (Helm, Kueue, Prometheus, the Prometheus Operator)
# start alike: go_tool_workdir NAME makes a wrapper module local/NAME in a temporary directory
# (removed on exit) and continues there, with `start` set for the timing; go_tool_get PKG@V...
# downloads the packages and, under fetch_only, ends the script. A wrapper module because `go
# install module@version` asks the proxy for a version list it may refuse. Both expect the
# script's OUT and log().
go_tool_workdir() {
  mkdir -p "$OUT"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  start=$(date +%s)
  cd "$work"
  go mod init "local/$1" >/dev/null 2>&1
}
go_tool_get() {
  go get "$@" >&2
  if fetch_only; then
    log "modules downloaded in $(( $(date +%s) - start )) s"
    exit 0
  fi
}

# k8s_build: Kubernetes commands at one release from the Go module proxy.
#
# Why a wrapper module: `go install k8s.io/kubernetes/cmd/...` fails because
# k8s.io/kubernetes's go.mod replaces every staging module with ./staging/src/...
# (golang/go#44840). The wrapper requires k8s.io/kubernetes v1.Y.Z and replaces each
# staging module by k8s.io/<m> v0.Y.Z, which upstream publishes from the same tree
# (kubernetes/kubernetes#79384). Both scripts share the Go build cache, so packages compiled for
# the control plane are reused for the kubelet.

# k8s_build VERSION DIR OUT CMD...: build k8s.io/kubernetes/cmd/CMD... at vVERSION into OUT,
# in a wrapper module made in DIR, with the version stamped as a release build stamps it. Only
# downloads the modules under fetch_only.
k8s_build() {
  local version=$1 dir=$2 out=$3; shift 3
  local staging="v0.${version#1.}" minor="${version#1.}" gomod m c
  minor="${minor%%.*}"
  mkdir -p "$dir" && (
    cd "$dir"
    go mod init local/k8sbuild >/dev/null 2>&1
    gomod=$(go mod download -json "k8s.io/kubernetes@v${version}" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    for m in $(sed -n 's|^[[:space:]]*\(k8s\.io/[^ ]*\) => \./staging/src/.*|\1|p' "$gomod"); do
      go mod edit "-replace=$m=$m@$staging"
    done
    # go get on the command packages (not just the module) records go.sum for all they import.
    local pkgs=()
    for c in "$@"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
    go get "${pkgs[@]/%/@v${version}}" >&2
    if fetch_only; then exit 0; fi
    go build -trimpath -o "$out/" -ldflags "-s -w \
      -X k8s.io/component-base/version.gitVersion=v${version} \
      -X k8s.io/component-base/version.gitMajor=1 \
      -X k8s.io/component-base/version.gitMinor=${minor} \
      -X k8s.io/component-base/version.gitTreeState=clean" "${pkgs[@]}" >&2
  )
}
