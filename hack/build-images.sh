#!/usr/bin/env bash
# Builds the container images of the real-node test tier without a registry or a Docker daemon,
# and caches each as an image archive. Called by the cluster harness (tests/harness/cluster.py,
# which imports the archives into the node's containerd) and by tests/images/; safe to rerun.
#
#   base      localhost/scalelab/base:bookworm   debootstrap --variant=minbase of Debian bookworm
#             from the Debian mirror this machine's apt sources name (+ ca-certificates, python3,
#             python3-venv), turned into an image by `buildah from scratch` + `buildah add` of the
#             rootfs tar: the image lands directly in the store the Dockerfile builds FROM, with one
#             tool (umoci would need an extra OCI-layout copy and a `buildah pull` to get there).
#   pause     localhost/scalelab/pause:3.10      images/pause/pause.c, gcc -static, one file.
#   operator  localhost/scalelab/operator:test   Dockerfile --target operator, BASE_IMAGE=base.
#   trainer   localhost/scalelab/trainer:test    Dockerfile --target trainer,  BASE_IMAGE=base,
#             ACCELERATOR=cpu (tensorflow-cpu as in CI, Horovod with Gloo + MPI, no NCCL), reusing
#             the Horovod wheel hack/install-python.sh caches (copied into images/wheels/ of the
#             build context; without it pip compiles Horovod in the build, a few minutes more).
#   spirals   localhost/scalelab/trainer-spirals:test   a team's derived trainer image, built the
#             way examples/spirals-plugin/README.md tells a team to: that folder's Dockerfile
#             (`FROM` the trainer image + `pip install` of the example package), TRAINER_IMAGE=
#             the trainer above. Built without a network (unshare --net): it installs offline.
#   shapes    localhost/scalelab/trainer-shapes:test    the same for examples/image-files-plugin
#             (a team's model reading PNG files from a volume; tests/node/test_image_files.py).
#   cuda      localhost/scalelab/trainer-cuda:test      Dockerfile --target trainer,
#             BASE_IMAGE=base, ACCELERATOR=cuda: the Dockerfile's default GPU build
#             (tensorflow[and-cuda] with the CUDA wheels of images/requirements/cuda.txt, Horovod
#             compiled with NCCL, images/cuda-toolchain.sh giving nvcc for that step only). Only
#             on request (SCALELAB_IMAGES names it): a few GB to download and several GB
#             unpacked, which the node harness would otherwise import into containerd every
#             session; tests/images/test_cuda_image.py and tests/node/test_cuda_image.py ask for it.
#
# Builds use buildah (vfs storage, chroot isolation, --pull=never) with its store under the cache,
# from a staged build context holding exactly the files the Dockerfile reads. Each archive
# (docker-archive, `ctr -n k8s.io images import FILE`) is named by a hash of everything that goes
# into it (base recipe, staged context incl. Dockerfile, sources, requirement files and wheel,
# build arguments), so a warm run rebuilds nothing. pip inside the build uses the host's pip
# index settings (pip config / PIP_* / /etc/pip.conf), passed as build secrets, never stored.
#
# Prints `NAME=ARCHIVE` lines (base, pause, operator, trainer, spirals, shapes; cuda when asked)
# on stdout, nothing else; logs go to stderr. Needs root (debootstrap, chroot). Environment:
# SCALELAB_CACHE (default ~/.cache/scalelab), SCALELAB_DEBIAN_MIRROR (overrides the mirror found
# in the apt sources), SCALELAB_IMAGES (space-separated subset of "base pause operator trainer
# spirals shapes cuda"; default all but cuda).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
CACHE="${SCALELAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/scalelab}"
OUT="$CACHE/images"
STORE="$OUT/buildah"
WANT="${SCALELAB_IMAGES:-base pause operator trainer spirals shapes}"
SUITE=bookworm
BASE_PACKAGES=ca-certificates,python3,python3-venv
declare -A NAME=(
  [base]=localhost/scalelab/base:bookworm
  [pause]=localhost/scalelab/pause:3.10
  [operator]=localhost/scalelab/operator:test
  [trainer]=localhost/scalelab/trainer:test
  [spirals]=localhost/scalelab/trainer-spirals:test
  [shapes]=localhost/scalelab/trainer-shapes:test
  [cuda]=localhost/scalelab/trainer-cuda:test
)
# The teams' derived images: each built from its example folder's Dockerfile FROM the trainer.
DERIVED=(spirals shapes)
declare -A EXAMPLE=([spirals]=examples/spirals-plugin [shapes]=examples/image-files-plugin)
log() { echo "build-images: $*" >&2; }
die() { log "error: $*"; exit 1; }

# --- tools (Debian packages; idempotent) ------------------------------------------------------
[ "$(id -u)" = 0 ] || die "needs root (debootstrap and buildah's chroot isolation)"
# shellcheck source=hack/lib.sh
source hack/lib.sh
apt_ensure buildah debootstrap gcc libc6-dev

mkdir -p "$OUT" "$STORE"
exec 9>"$OUT/.lock"
B=(buildah --root "$STORE/root" --runroot "$STORE/run" --storage-driver vfs)
remove_tree() {
  # debootstrap mounts proc/sys inside its target; never let rm cross into them.
  { grep -o " $1/[^ ]*" /proc/mounts || true; } | sort -r | while read -r m; do
    umount -l "$m" || true
  done
  rm -rf --one-file-system "$1"
}
# Named by the run's pid: a warm run works here without the lock (below).
work="$(mktemp -d "$OUT/.work.$$.XXXXXX")"
trap 'remove_tree "$work"' EXIT

sha() { sha256sum | cut -c1-16; }
# Hash of a directory tree: every file's path, mode and content.
tree_hash() {
  (cd "$1" && find . -type f -printf '%p %m\n' | LC_ALL=C sort | while read -r f m; do
    printf '%s %s %s\n' "$f" "$m" "$(sha256sum <"$f" | cut -d' ' -f1)"
  done) | sha
}
have_image() { "${B[@]}" inspect --type image "$1" >/dev/null 2>&1; }
key_of() { "${B[@]}" inspect --type image --format '{{index .OCIv1.Config.Labels "org.scalelab.key"}}' "$1" 2>/dev/null || true; }
size_mb() { du -sm "$1" | cut -f1; }
export_archive() { # IMAGE ARCHIVE: docker-archive written aside, then moved into place
  "${B[@]}" push -q "$1" "docker-archive:$2.part:$1" >&2
  mv "$2.part" "$2"
}
report() { # NAME ARCHIVE SECONDS
  local unpacked
  unpacked=$("${B[@]}" images --format '{{.Size}}' "${NAME[$1]}" 2>/dev/null | head -1 || true)
  log "$1: ${NAME[$1]} built in ${3}s; archive $(size_mb "$2") MB; unpacked ${unpacked:-?}"
}
prune() { # NAME KEEP: older archives of the same image
  find "$OUT" -maxdepth 1 -name "$1-*.tar" ! -name "$(basename "$2")" -delete
}

# --- the Debian mirror, from this machine's apt sources ----------------------------------------
debian_mirror() {
  if [ -n "${SCALELAB_DEBIAN_MIRROR:-}" ]; then
    echo "$SCALELAB_DEBIAN_MIRROR"
    return
  fi
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    # one-line format: deb [options] URI SUITE COMPONENTS...
    awk -v s="$SUITE" '$1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                                     if ($(i + 1) == s) { print $i; exit } }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # deb822 format: stanzas separated by blank lines
    awk -v s="$SUITE" 'function flush() { if (deb && on && suite && uri != "") { print uri; exit }
                                          deb = 0; on = 1; suite = 0; uri = "" }
      BEGIN { on = 1 }
      /^[ \t]*$/ { flush(); next }
      /^Types:/ { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
      /^URIs:/ { uri = $2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == s) suite = 1 }
      /^Enabled:[ \t]*no/ { on = 0 }
      END { flush() }' "$f"
  done
}

# --- base ---------------------------------------------------------------------------------------
build_base() {
  local mirror rootfs="$work/rootfs" c
  mirror=$(debian_mirror | head -1)
  [ -n "$mirror" ] || die "no Debian $SUITE source in /etc/apt/sources.list{,.d}; set SCALELAB_DEBIAN_MIRROR"
  log "base: debootstrap --variant=minbase $SUITE (+ $BASE_PACKAGES) from the host's Debian mirror"
  debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$rootfs" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
  rm -rf "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/* "$rootfs"/tmp/*
  # Like the official Debian images the Dockerfile's defaults derive from: apt keeps no .debs in
  # image layers, and the host's resolver and name stay out (runtimes provide both).
  cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  : >"$rootfs/etc/resolv.conf"
  : >"$rootfs/etc/hostname"
  # The runtime provides /dev, /proc and /sys.
  tar --numeric-owner --xattrs -C "$rootfs" --exclude='./dev/*' --exclude='./proc/*' \
    --exclude='./sys/*' -cf "$work/rootfs.tar" .
  c=$("${B[@]}" from scratch)
  "${B[@]}" add -q "$c" "$work/rootfs.tar" / >&2
  "${B[@]}" config --os linux --arch amd64 --cmd /bin/bash --label "org.scalelab.key=$1" \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 "$c"
  "${B[@]}" commit -q --rm "$c" "${NAME[base]}" >/dev/null
  rm -rf --one-file-system "$rootfs" "$work/rootfs.tar"
}

# --- pause --------------------------------------------------------------------------------------
build_pause() {
  local c
  mkdir -p "$work/pause"
  gcc -static -Os -s -Wall -Wextra -Werror -o "$work/pause/pause" images/pause/pause.c
  c=$("${B[@]}" from scratch)
  "${B[@]}" copy -q --chmod 0755 "$c" "$work/pause/pause" /pause >&2
  "${B[@]}" config --os linux --arch amd64 --entrypoint '["/pause"]' --cmd '' \
    --label "org.scalelab.key=$1" "$c"
  "${B[@]}" commit -q --rm "$c" "${NAME[pause]}" >/dev/null
}

# --- operator and trainer: the Dockerfile -------------------------------------------------------
# The files of the repository under the given paths as git sees them (tracked and untracked, not
# ignored), so caches, egg-info and wheels never enter the context or the hash.
repo_files() {
  if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git -C "$REPO" ls-files -co --exclude-standard -- "$@"
  else
    find "$@" -type f ! -path '*/__pycache__/*' ! -path '*.egg-info/*' ! -path 'images/wheels/*'
  fi | LC_ALL=C sort -u | while read -r f; do [ -f "$f" ] && echo "$f"; done
}

# Exactly what the target's COPY and RUN --mount instructions read (tests/images checks the list).
stage_context() { # TARGET DIR
  local ctx="$2"
  if [ -n "${EXAMPLE[$1]:-}" ]; then # the example's own folder is the context, as in its README
    local dir="${EXAMPLE[$1]}"
    repo_files "$dir" | while read -r f; do
      mkdir -p "$ctx/$(dirname "${f#"$dir"/}")"
      cp -p "$f" "$ctx/${f#"$dir"/}"
    done
    return
  fi
  mkdir -p "$ctx/images/wheels"
  local build=$1
  [ "$1" = cuda ] && set -- trainer "$2" # the same target, its CUDA build
  case "$1" in
    operator) set -- operator images/requirements/operator.txt operator ;;
    trainer) set -- trainer images/requirements/trainer.txt images/requirements/horovod.txt \
      images/requirements/cuda.txt images/cuda-toolchain.sh images/ssh_config images/sshd_config \
      images/entrypoint-trainer.sh trainer ;;
  esac
  repo_files Dockerfile "${@:2}" | while read -r f; do cp --parents -p "$f" "$ctx/"; done
  if [ "$build" = trainer ]; then
    local hvd tf wheels
    hvd=$(sed -n 's/^horovod==\([^ #]*\).*/\1/p' images/requirements/horovod.txt)
    tf=$(sed -n 's/^tensorflow-cpu==\([^ #]*\).*/\1/p' images/requirements/trainer.txt)
    # The image's Python is Debian's 3.11 (python3.11 in the Dockerfile): cp311.
    wheels="$CACHE/wheels/horovod-${hvd}-tf-${tf}-cp311-gloo-mpi"
    if ls "$wheels"/horovod-"$hvd"-*.whl >/dev/null 2>&1; then
      cp -p "$wheels"/horovod-"$hvd"-*.whl "$ctx/images/wheels/"
    else
      log "trainer: no cached Horovod wheel in $wheels (hack/install-python.sh makes it);" \
        "pip compiles Horovod inside the build"
    fi
  fi
}

# pip settings of this host as build secrets (pip.conf, and the CA bundle pip trusts).
pip_secrets() {
  local pip="" conf="$work/pip.conf" ca="$work/pip-ca.crt" k v cert=""
  : >"$ca"
  if [ -x "$REPO/.venv/bin/pip" ]; then pip="$REPO/.venv/bin/pip"
  elif python3 -m pip --version >/dev/null 2>&1; then pip="python3 -m pip"; fi
  echo "[global]" >"$conf"
  if [ -n "$pip" ]; then
    # lines like  global.index-url='…'  or  :env:.index-url='…'
    $pip config list 2>/dev/null | while IFS='=' read -r k v; do
      k="${k##*.}"; v="${v#\'}"; v="${v%\'}"
      case "$k" in
        index-url | extra-index-url | trusted-host | timeout | retries | default-timeout)
          printf '%s = %s\n' "$k" "$v" ;;
        cert) printf '#cert %s\n' "$v" ;;
      esac
    done >>"$conf"
  fi
  cert=$(sed -n 's/^#cert //p' "$conf" | tail -1)
  sed -i '/^#cert /d' "$conf"
  # pip inside the image trusts what pip here trusts: the configured bundle, else the system's.
  [ -n "$cert" ] || cert="${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}"
  if [ -r "$cert" ]; then
    cp "$cert" "$ca"
    echo "cert = /run/secrets/pip-ca.crt" >>"$conf"
  fi
  SECRETS=(--secret "id=pip.conf,src=$conf" --secret "id=pip-ca.crt,src=$ca")
}

build_target() { # NAME KEY CTX: operator, trainer (its CPU build) or cuda (its CUDA build)
  local args=(--build-arg "BASE_IMAGE=${NAME[base]}") target=$1
  case "$1" in
    trainer) args+=(--build-arg ACCELERATOR=cpu) ;;
    cuda) args+=(--build-arg ACCELERATOR=cuda) target=trainer ;;
  esac
  log "$1: buildah bud --target $target ${args[*]:2} (log: $work/$1.log)"
  if ! "${B[@]}" bud --isolation chroot --pull=never --layers=false --force-rm \
    --target "$target" "${args[@]}" "${SECRETS[@]}" --label "org.scalelab.key=$2" \
    -f "$3/Dockerfile" -t "${NAME[$1]}" "$3" >"$work/$1.log" 2>&1; then
    tail -40 "$work/$1.log" >&2
    cp "$work/$1.log" "$OUT/$1.failed.log"
    die "$1 build failed (full log: $OUT/$1.failed.log)"
  fi
}

# The team's image: their Dockerfile FROM the trainer image in the store, no network (the package
# installs from its source folder with the trainer's own build backend).
build_derived() { # NAME KEY CTX
  log "$1: buildah bud ${EXAMPLE[$1]}/Dockerfile FROM ${NAME[trainer]} (log: $work/$1.log)"
  # unshare --net: a network namespace with loopback only (chroot isolation has no --network).
  if ! unshare --net "${B[@]}" bud --isolation chroot --pull=never --layers=false --force-rm \
    --build-arg "TRAINER_IMAGE=${NAME[trainer]}" --label "org.scalelab.key=$2" \
    -f "$3/Dockerfile" -t "${NAME[$1]}" "$3" >"$work/$1.log" 2>&1; then
    tail -40 "$work/$1.log" >&2
    cp "$work/$1.log" "$OUT/$1.failed.log"
    die "$1 build failed (full log: $OUT/$1.failed.log)"
  fi
}

# --- main ---------------------------------------------------------------------------------------
declare -A KEY ARCHIVE
KEY[base]=$( { declare -f build_base; echo "$SUITE $BASE_PACKAGES"; } | sha)
KEY[pause]=$( { declare -f build_pause; cat images/pause/pause.c; } | sha)
for t in operator trainer cuda; do
  stage_context "$t" "$work/ctx-$t"
  # The name too: the trainer's two builds may stage the same files.
  KEY[$t]=$( { echo "${KEY[base]} $t"; declare -f build_target; tree_hash "$work/ctx-$t"; } | sha)
done
for d in "${DERIVED[@]}"; do
  stage_context "$d" "$work/ctx-$d"
  KEY[$d]=$( { echo "${KEY[trainer]}"; declare -f build_derived; tree_hash "$work/ctx-$d"; } | sha)
done
for n in base pause operator trainer "${DERIVED[@]}" cuda; do
  ARCHIVE[$n]="$OUT/$n-${KEY[$n]}.tar"
done

# One build at a time per cache (the harness, tests/images and hack/test.sh may all ask), but a
# run whose images are all archived answers without waiting: hack/test.sh builds the CUDA image
# beside the node tier, whose fixtures ask for the other images.
for n in "${!ARCHIVE[@]}"; do
  case " $WANT " in *" $n "*) [ -f "${ARCHIVE[$n]}" ] || missing=1 ;; esac
done
if [ "${missing:-0}" = 1 ]; then
  flock -n 9 || { log "waiting for another build-images.sh to finish"; flock 9; }
  # Left by a killed run: we hold the lock, so no other run builds; a warm run may be reading.
  for stale in "$OUT"/.work.*; do
    [ -d "$stale" ] && [ "$stale" != "$work" ] || continue
    pid=${stale#"$OUT/.work."}
    pid=${pid%%.*}
    if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then continue; fi
    remove_tree "$stale"
  done
  rm -f "$OUT"/*.tar.part
fi

needs() { # NAME: wanted (or needed by a wanted image) and not archived yet
  [ -f "${ARCHIVE[$1]}" ] && return 1
  case " $WANT " in *" $1 "*) return 0 ;; esac
  return 1
}
need_base=0
# A derived image builds FROM the trainer: wanting one wants the trainer archive too.
need_derived=0
for d in "${DERIVED[@]}"; do
  if needs "$d"; then need_derived=1; fi
done
if [ "$need_derived" = 1 ] && ! needs trainer && [ ! -f "${ARCHIVE[trainer]}" ]; then
  WANT="$WANT trainer"
fi
for n in base operator trainer cuda; do
  if needs "$n"; then need_base=1; fi
done

if [ "$need_base" = 1 ]; then
  if [ "$(key_of "${NAME[base]}")" = "${KEY[base]}" ]; then
    :
  elif [ -f "${ARCHIVE[base]}" ]; then
    log "base: loading ${ARCHIVE[base]} into the build store"
    "${B[@]}" pull -q "docker-archive:${ARCHIVE[base]}" >/dev/null
  else
    start=$(date +%s)
    build_base "${KEY[base]}"
    export_archive "${NAME[base]}" "${ARCHIVE[base]}"
    prune base "${ARCHIVE[base]}"
    report base "${ARCHIVE[base]}" $(($(date +%s) - start))
    "${B[@]}" rmi --prune >/dev/null 2>&1 || true # the base this one replaced
  fi
fi

if needs pause; then
  start=$(date +%s)
  build_pause "${KEY[pause]}"
  export_archive "${NAME[pause]}" "${ARCHIVE[pause]}"
  prune pause "${ARCHIVE[pause]}"
  report pause "${ARCHIVE[pause]}" $(($(date +%s) - start))
  "${B[@]}" rmi -f "${NAME[pause]}" >/dev/null 2>&1 || true
fi

for t in operator trainer; do
  needs "$t" || continue
  pip_secrets
  start=$(date +%s)
  build_target "$t" "${KEY[$t]}" "$work/ctx-$t"
  export_archive "${NAME[$t]}" "${ARCHIVE[$t]}"
  prune "$t" "${ARCHIVE[$t]}"
  report "$t" "${ARCHIVE[$t]}" $(($(date +%s) - start))
  # The archive is the product; vfs keeps a full copy per image, so the store keeps only the base
  # (and the trainer while a derived image still needs it).
  [ "$t" = trainer ] && [ "$need_derived" = 1 ] && continue
  "${B[@]}" rmi -f "${NAME[$t]}" >/dev/null 2>&1 || true
done

for d in "${DERIVED[@]}"; do
  needs "$d" || continue
  start=$(date +%s)
  if [ "$(key_of "${NAME[trainer]}")" != "${KEY[trainer]}" ]; then
    log "$d: loading ${ARCHIVE[trainer]} into the build store"
    "${B[@]}" pull -q "docker-archive:${ARCHIVE[trainer]}" >/dev/null
  fi
  build_derived "$d" "${KEY[$d]}" "$work/ctx-$d"
  export_archive "${NAME[$d]}" "${ARCHIVE[$d]}"
  prune "$d" "${ARCHIVE[$d]}"
  report "$d" "${ARCHIVE[$d]}" $(($(date +%s) - start))
  "${B[@]}" rmi -f "${NAME[$d]}" >/dev/null 2>&1 || true
done
if [ "$need_derived" = 1 ]; then "${B[@]}" rmi -f "${NAME[trainer]}" >/dev/null 2>&1 || true; fi

# Last: the CUDA build takes longest, and the images the node tier starts with come first.
if needs cuda; then
  pip_secrets
  start=$(date +%s)
  build_target cuda "${KEY[cuda]}" "$work/ctx-cuda"
  export_archive "${NAME[cuda]}" "${ARCHIVE[cuda]}"
  prune cuda "${ARCHIVE[cuda]}"
  report cuda "${ARCHIVE[cuda]}" $(($(date +%s) - start))
  "${B[@]}" rmi -f "${NAME[cuda]}" >/dev/null 2>&1 || true
fi

for n in base pause operator trainer "${DERIVED[@]}" cuda; do
  case " $WANT " in *" $n "*) echo "$n=${ARCHIVE[$n]}" ;; esac
done
