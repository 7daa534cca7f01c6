#!/usr/bin/env bash
# Builds the test actor images locally (no registry is reachable here):
#   abaco-test/busybox:latest  docker import of a busybox-static root filesystem (busybox/)
#   abaco-test/echo:latest     FROM busybox: prints MSG and the _abaco variables (echo/)
#   abaco-test/caller:latest   FROM busybox: calls the API with its access token (caller/)
#   abaco-test/sleep:latest    FROM busybox: sleeps ${SLEEP:-30} seconds (sleep/)
#   abaco-test/actor:latest    FROM scratch: static std-only Rust test actor /actor (testactor/)
# Idempotent: an image that exists is kept unless --force is given; an image whose base was
# rebuilt in this run is rebuilt too, and so is abaco-test/actor when its sources changed.
# Works from any directory. Concurrent runs are serialised.
# Fails loudly when Docker is not reachable, no static busybox can be found or cargo fails.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
force=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h | --help)
      sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
      echo "usage: $0 [--force]"
      exit 0
      ;;
    *)
      echo "images: unknown argument $arg (usage: $0 [--force])" >&2
      exit 2
      ;;
  esac
done

log() { echo "images: $*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

command -v docker >/dev/null 2>&1 || die "the docker CLI is not installed (apt-get install docker.io, or run scripts/services.sh)"
if ! docker_info=$(docker info --format '{{.ServerVersion}}' 2>&1); then
  die "Docker is not reachable: ${docker_info}
  start it (bash scripts/services.sh) or point DOCKER_HOST at a running daemon"
fi
log "Docker ${docker_info} is reachable"

# Serialise concurrent runs (several test binaries may call this at once).
if command -v flock >/dev/null 2>&1; then
  exec 9>"${TMPDIR:-/tmp}/abaco-test-images.lock"
  flock 9
fi

exists() { docker image inspect "$1" >/dev/null 2>&1; }

# Prints the path of a statically linked busybox: the host's (package busybox-static), or one
# unpacked from Debian's package without installing it.
find_busybox() {
  local candidate
  for candidate in /bin/busybox /usr/bin/busybox; do
    if [ -x "$candidate" ] && "$candidate" --list 2>/dev/null | grep -qx sh && is_static "$candidate"; then
      echo "$candidate"
      return
    fi
  done
  log "no static busybox on this host; fetching Debian's busybox-static package"
  local deb_dir
  deb_dir=$(mktemp -d)
  (cd "$deb_dir" && { apt-get download busybox-static >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 && apt-get download busybox-static >/dev/null; }; }) ||
    die "could not get busybox-static: install it (apt-get install busybox-static) and re-run"
  dpkg-deb -x "$deb_dir"/busybox-static_*.deb "$deb_dir/root"
  for candidate in "$deb_dir/root/bin/busybox" "$deb_dir/root/usr/bin/busybox"; do
    if [ -x "$candidate" ]; then
      echo "$candidate"
      return
    fi
  done
  die "the busybox-static package holds no bin/busybox"
}

# A dynamically linked busybox would not run inside the image, which has no libc.
is_static() {
  if command -v file >/dev/null 2>&1; then
    file -L "$1" | grep -q 'statically linked'
  else
    ! ldd "$1" >/dev/null 2>&1
  fi
}

build_busybox() {
  local busybox rootfs applet
  busybox=$(find_busybox)
  log "building abaco-test/busybox:latest from $busybox"
  rootfs=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now: the variable is local
  trap "rm -rf '$rootfs'" RETURN
  mkdir -p "$rootfs"/{bin,etc,root,tmp,proc,sys,dev,var/tmp}
  chmod 1777 "$rootfs/tmp" "$rootfs/var/tmp"
  cp "$busybox" "$rootfs/bin/busybox"
  for applet in $("$rootfs/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$rootfs/bin/$applet"
  done
  for applet in sh echo cat env sleep printf ls wc head dd nc wget; do
    [ -e "$rootfs/bin/$applet" ] || die "busybox at $busybox lacks the applet $applet"
  done
  ln -s bin "$rootfs/sbin"
  mkdir -p "$rootfs/usr"
  ln -s ../bin "$rootfs/usr/bin"
  cp "$here/busybox/etc/passwd" "$here/busybox/etc/group" "$rootfs/etc/"
  tar -C "$rootfs" --numeric-owner --owner=0 --group=0 -c . |
    docker import -c 'CMD ["/bin/sh"]' -c 'ENV PATH=/bin' \
      -m 'abaco test base: busybox-static' - abaco-test/busybox:latest >/dev/null
}

# Builds images/<dir> as abaco-test/<dir>:latest from the local busybox image (never pulls).
build_dockerfile() {
  local name=$1
  log "building abaco-test/$name:latest from images/$name"
  # The classic builder resolves FROM against local images and needs no buildx plugin.
  DOCKER_BUILDKIT=0 docker build --quiet -t "abaco-test/$name:latest" "$here/$name" >/dev/null 2>"${TMPDIR:-/tmp}/abaco-build-$name.log" ||
    die "docker build of images/$name failed: $(cat "${TMPDIR:-/tmp}/abaco-build-$name.log")"
}

# Content hash of the test actor's recipe, stored as an image label so edits trigger a rebuild.
testactor_hash() {
  (cd "$here/testactor" && find Cargo.toml Cargo.lock Dockerfile src -type f 2>/dev/null | LC_ALL=C sort |
    xargs sha256sum | sha256sum | cut -c1-16)
}

testactor_current() {
  local label
  label=$(docker image inspect --format '{{ index .Config.Labels "abaco.testactor.hash" }}' abaco-test/actor:latest 2>/dev/null) || return 1
  [ "$label" = "$(testactor_hash)" ]
}

# Compiles images/testactor as a static binary (std only, offline) and builds it FROM scratch.
build_testactor() {
  command -v cargo >/dev/null 2>&1 || die "cargo is not installed; it is needed to build abaco-test/actor"
  local triple target_dir binary context hash
  triple=$(rustc -vV 2>/dev/null | sed -n 's/^host: //p')
  [ -n "$triple" ] || triple=x86_64-unknown-linux-gnu
  target_dir="$here/../target/testactor"
  log "compiling images/testactor for $triple (static)"
  RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --release --offline \
    --manifest-path "$here/testactor/Cargo.toml" --target-dir "$target_dir" --target "$triple" ||
    die "cargo build of images/testactor failed"
  binary="$target_dir/$triple/release/testactor"
  [ -x "$binary" ] || die "cargo built no $binary"
  if command -v file >/dev/null 2>&1; then
    file -L "$binary" | grep -Eq 'statically linked|static-pie linked' || die "$binary is not statically linked: $(file -L "$binary")"
  fi
  hash=$(testactor_hash)
  log "building abaco-test/actor:latest from images/testactor"
  context=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now: the variable is local
  trap "rm -rf '$context'" RETURN
  cp "$here/testactor/Dockerfile" "$context/Dockerfile"
  cp "$binary" "$context/actor"
  DOCKER_BUILDKIT=0 docker build --quiet --label "abaco.testactor.hash=$hash" -t abaco-test/actor:latest "$context" \
    >/dev/null 2>"${TMPDIR:-/tmp}/abaco-build-actor.log" ||
    die "docker build of images/testactor failed: $(cat "${TMPDIR:-/tmp}/abaco-build-actor.log")"
}

rebuilt_base=0
if [ "$force" = 1 ] || ! exists abaco-test/busybox:latest; then
  build_busybox
  rebuilt_base=1
else
  log "abaco-test/busybox:latest exists (use --force to rebuild)"
fi

for name in echo sleep caller; do
  if [ "$force" = 1 ] || [ "$rebuilt_base" = 1 ] || ! exists "abaco-test/$name:latest"; then
    build_dockerfile "$name"
  else
    log "abaco-test/$name:latest exists (use --force to rebuild)"
  fi
done

if [ "$force" = 1 ] || ! testactor_current; then
  build_testactor
else
  log "abaco-test/actor:latest exists (use --force to rebuild)"
fi

for image in busybox echo sleep caller actor; do
  exists "abaco-test/$image:latest" || die "abaco-test/$image:latest is missing after the build"
done
log "test images ready: abaco-test/busybox, echo, sleep, caller, actor (all :latest)"
