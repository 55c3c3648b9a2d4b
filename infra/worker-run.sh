#!/bin/bash
# Starts the gcpmig-pgqueue worker container on a Container-Optimized OS VM; run by pgqueue-worker.service.
# infra/startup.ts renders this file into the VM's cloud-init, replacing each @@-delimited name with a quoted
# value; everything else is this file byte for byte, checked by shellcheck in `npm test`.
#
#   bash run.sh serve              pull the image by digest and run the worker in the foreground (the unit)
#   bash run.sh exec COMMAND...    a one-off command (add-jobs, observe) in the same image, same environment
set -euo pipefail

readonly IMAGE=@@IMAGE@@
readonly REGISTRY=@@REGISTRY@@
readonly PASSWORD_SECRET=@@PASSWORD_SECRET@@
readonly NAME=@@CONTAINER_NAME@@
readonly ENV_FILE=@@ENV_FILE@@
readonly RUN_DIR=@@RUN_DIR@@
readonly HEALTH_PORT=@@HEALTH_PORT@@
readonly STOP_TIMEOUT=@@STOP_TIMEOUT@@
# The uid:gid the container runs as: the password file is made readable by it alone.
readonly CONTAINER_USER=@@CONTAINER_USER@@
readonly CONTAINER_PASSFILE=@@CONTAINER_PASSFILE@@
# Empty when the workers do not verify the server certificate.
readonly SERVER_CA=@@SERVER_CA@@
readonly CONTAINER_SERVER_CA=@@CONTAINER_SERVER_CA@@
readonly METADATA='http://metadata.google.internal/computeMetadata/v1'
readonly SECRETS_API='https://secretmanager.googleapis.com/v1'

log() { echo "pgqueue: $*" >&2; }

# COS has no jq or python: both JSON documents are read with sed, on fields whose alphabet is known
# (an OAuth token, base64), so a pattern cannot be confused by the surrounding text.
access_token() {
  curl -fsS --retry 5 --retry-connrefused -H 'Metadata-Flavor: Google' \
    "$METADATA/instance/service-accounts/default/token" |
    tr -d '\n' | sed -n 's|.*"access_token" *: *"\([^"]*\)".*|\1|p'
}

# Writes the password to $1 as a libpq password file (PGPASSFILE): one line `*:*:*:*:<password>` with `\`
# and `:` escaped, mode 0600, owned by the container's user. It lives on tmpfs and reaches the container as
# a read-only bind mount, so the password is in no environment, no container config and on no disk.
write_passfile() {
  local target=$1 token payload raw bytes kept
  token=$(access_token)
  if [ -z "$token" ]; then log "no access token from the metadata server"; return 1; fi
  payload=$(curl -fsS --retry 5 --retry-connrefused -H "Authorization: Bearer $token" \
    "$SECRETS_API/$PASSWORD_SECRET:access" | tr -d '\n' |
    sed -n 's|.*"data" *: *"\([A-Za-z0-9+/=]*\)".*|\1|p')
  if [ -z "$payload" ]; then log "Secret Manager returned no payload for $PASSWORD_SECRET"; return 1; fi
  raw="$target.raw"
  ( umask 077; printf '%s' "$payload" | base64 -d > "$raw" )
  bytes=$(wc -c < "$raw")
  kept=$(tr -d '\n\r\000' < "$raw" | wc -c)
  if [ "$bytes" -eq 0 ] || [ "$kept" -ne "$bytes" ]; then
    rm -f "$raw"
    log "the database password is empty or contains a line break or NUL; a password file cannot carry it"
    return 1
  fi
  ( umask 077; { printf '*:*:*:*:'; sed -e 's/\\/\\\\/g' -e 's/:/\\:/g' < "$raw"; printf '\n'; } > "$target" )
  rm -f "$raw"
  chown "$CONTAINER_USER" "$target"
  chmod 0600 "$target"
}

# The docker flags both modes share: the host's network, the environment file, the password file, the CA.
container_flags() {
  local passfile=$1
  FLAGS=(--network=host --user "$CONTAINER_USER" --env-file "$ENV_FILE"
    --volume "$passfile:$CONTAINER_PASSFILE:ro")
  if [ -n "$SERVER_CA" ]; then FLAGS+=(--volume "$SERVER_CA:$CONTAINER_SERVER_CA:ro"); fi
}

serve() {
  # COS's host firewall drops inbound traffic except SSH; the VPC firewall already limits who may connect.
  iptables -w -C INPUT -p tcp --dport "$HEALTH_PORT" -j ACCEPT 2>/dev/null ||
    iptables -w -A INPUT -p tcp --dport "$HEALTH_PORT" -j ACCEPT
  docker-credential-gcr configure-docker --registries="$REGISTRY" >/dev/null
  docker pull --quiet "$IMAGE" >/dev/null
  docker rm --force "$NAME" >/dev/null 2>&1 || true
  mkdir -p "$RUN_DIR"
  chmod 0755 "$RUN_DIR"
  local passfile="$RUN_DIR/pgpass"
  write_passfile "$passfile"
  container_flags "$passfile"
  docker create --rm --name "$NAME" \
    --log-driver=gcplogs \
    --stop-signal=SIGTERM \
    --stop-timeout="$STOP_TIMEOUT" \
    "${FLAGS[@]}" \
    "$IMAGE" >/dev/null
  # The worker's output goes to Cloud Logging through gcplogs only. Attached output would also land in this
  # unit's journal, which COS's logging agent ships too: every line would arrive twice.
  local status=0
  docker start --attach "$NAME" >/dev/null 2>&1 || status=$?
  log "worker container exited with status $status"
  exit "$status"
}

run_once() {
  mkdir -p "$RUN_DIR"
  # Global, not local: the EXIT trap runs after this function has returned.
  EXEC_PASSFILE=$(mktemp "$RUN_DIR/exec.XXXXXX")
  trap 'rm -f "$EXEC_PASSFILE"' EXIT
  write_passfile "$EXEC_PASSFILE"
  container_flags "$EXEC_PASSFILE"
  if [ -t 0 ] && [ -t 1 ]; then FLAGS+=(--tty); fi
  docker run --rm --interactive "${FLAGS[@]}" "$IMAGE" "$@"
}

case "${1:-serve}" in
  serve) serve ;;
  exec) shift; run_once "$@" ;;
  *) log "usage: bash $0 [serve | exec COMMAND [ARGS...]]"; exit 2 ;;
esac
