#!/usr/bin/env bash
# Builds the platform image abaco/platform:local from the `abaco` binary (images/platform/):
# compiles the binary (cargo build --release, or --debug), copies it with the shared libraries
# `ldd` names (glibc: the image has no libc of its own) and abaco.conf into a temporary build
# context, builds FROM the local abaco-test/busybox:latest (made by images/build.sh when
# missing; nothing is pulled) and checks that the image runs `abaco check-config`.
#   --debug         use a debug build (target/debug/abaco)
#   --binary PATH   use this abaco binary, do not run cargo
#   --tag NAME      image name (default abaco/platform:local)
# Works from any directory. Fails loudly when Docker is unreachable or cargo fails.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
profile=release
binary=
tag=abaco/platform:local
usage() { echo "usage: $0 [--debug] [--binary PATH] [--tag NAME]"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --debug) profile=debug ;;
    --release) profile=release ;;
    --binary) binary=${2:?--binary needs a path}; shift ;;
    --tag) tag=${2:?--tag needs a name}; shift ;;
    -h | --help)
      sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
      usage
      exit 0
      ;;
    *)
      echo "platform: unknown argument $1 ($(usage))" >&2
      exit 2
      ;;
  esac
  shift
done

log() { echo "platform: $*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

command -v docker >/dev/null 2>&1 || die "the docker CLI is not installed (run scripts/services.sh)"
docker info >/dev/null 2>&1 || die "Docker is not reachable; start it (bash scripts/services.sh) or set DOCKER_HOST"

# The base image: the test images' busybox, built locally.
if ! docker image inspect abaco-test/busybox:latest >/dev/null 2>&1; then
  log "abaco-test/busybox:latest is missing; running images/build.sh"
  bash "$repo/images/build.sh"
fi

# The binary.
if [ -z "$binary" ]; then
  command -v cargo >/dev/null 2>&1 || die "cargo is not installed (or pass --binary PATH)"
  log "cargo build --$profile -p abaco"
  flags=()
  [ "$profile" = release ] && flags+=(--release)
  (cd "$repo" && cargo build --quiet "${flags[@]}" -p abaco --bin abaco) || die "cargo build of abaco failed"
  binary="$repo/target/$profile/abaco"
fi
[ -x "$binary" ] || die "no executable abaco binary at $binary"
log "binary: $binary"

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
rootfs="$context/rootfs"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/abaco" "$rootfs/var/lib/abaco"
cp "$binary" "$rootfs/usr/local/bin/abaco"
cp "$repo/abaco.conf" "$rootfs/etc/abaco/abaco.conf"
cp "$here/Dockerfile" "$context/Dockerfile"

# The shared libraries the binary links, at the paths the dynamic loader looks for them
# (including the loader itself, e.g. /lib64/ld-linux-x86-64.so.2). A static binary needs none.
if ldd_out=$(ldd "$binary" 2>&1) && ! grep -q 'statically linked\|not a dynamic executable' <<<"$ldd_out"; then
  libs=$(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$ldd_out" | sort -u)
  [ -n "$libs" ] || die "ldd named no libraries for $binary: $ldd_out"
  for lib in $libs; do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
    log "library: $lib"
  done
else
  log "the binary is statically linked; no libraries copied"
fi

log "building $tag"
hash=$(sha256sum "$binary" | cut -c1-16)
# The classic builder resolves FROM against local images and needs no buildx plugin.
DOCKER_BUILDKIT=0 docker build --quiet --label "abaco.platform.binary=$hash" -t "$tag" "$context" \
  >/dev/null 2>"$context/build.log" || die "docker build of $tag failed: $(cat "$context/build.log")"

# The image must run: abaco starts, reads /etc/abaco/abaco.conf and the environment overrides.
if ! out=$(docker run --rm -e store_backend=distributed "$tag" check-config 2>&1); then
  die "$tag does not run \`abaco check-config\`: $out"
fi
grep -q 'Distributed' <<<"$out" || die "\`abaco check-config\` in $tag did not apply store_backend=distributed: $out"
log "$tag runs \`abaco check-config\` (environment overrides applied)"
log "image ready: $tag ($(docker image inspect --format '{{.Size}}' "$tag" | awk '{ printf "%.1f MB", $1 / 1e6 }'))"
