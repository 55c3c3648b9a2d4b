#!/usr/bin/env bash
# Operator access to the deployed queue database. Cloud SQL has only a private IP and nothing listens on the
# internet: the way in is SSH through Identity-Aware Proxy to a worker VM (the firewall admits SSH from
# IAP's range only), authenticated by your gcloud identity and OS Login.
#
#   db-tunnel.sh [--stack S] tunnel [PORT]     forward 127.0.0.1:PORT (default 15432) to Cloud SQL; Ctrl-C closes
#   db-tunnel.sh [--stack S] env [PORT]        print `export PG...` lines for a running tunnel:
#                                                eval "$(scripts/db-tunnel.sh env)" && npm run observe
#   db-tunnel.sh [--stack S] psql [PORT]       psql through a running tunnel
#   db-tunnel.sh [--stack S] run SCRIPT [ARGS] run add-jobs or observe inside a worker VM, in the worker image
#                                                (no tunnel, no password on your machine):
#                                                scripts/db-tunnel.sh run add-jobs 2000 500 --task burn
#
# Needs: gcloud (logged in), pulumi (to read the stack's outputs), node. IAM: roles/iap.tunnelResourceAccessor
# and roles/compute.osAdminLogin (run needs sudo on the VM; tunnel alone needs roles/compute.osLogin), plus
# roles/iam.serviceAccountUser on the workers' service account (output workerServiceAccount): OS Login to a
# VM that runs as a service account requires it. env/psql also need roles/secretmanager.secretAccessor on the
# password secret and roles/cloudsql.viewer.
#
# Written for bash 3.2 (macOS's /bin/bash) too: no arrays, since expanding an empty one under `set -u` is an
# error before bash 4.4.
set -euo pipefail

STACK=
if [ "${1:-}" = --stack ]; then
  STACK=${2:?--stack needs a name}
  shift 2
fi
COMMAND=${1:-tunnel}
shift || true

die() { echo "db-tunnel: $*" >&2; exit 1; }
command -v gcloud >/dev/null || die "gcloud is not installed (https://cloud.google.com/sdk/docs/install)"
command -v pulumi >/dev/null || die "pulumi is not installed"

stack_outputs() {
  if [ -n "$STACK" ]; then pulumi stack output --json --stack "$STACK"; else pulumi stack output --json; fi
}
OUTPUTS=$(stack_outputs) || die "cannot read the stack's outputs (run from the repository, after pulumi up)"
output() {
  node -e 'const o = JSON.parse(process.argv[1]); const v = o[process.argv[2]]; if (v === undefined) process.exit(1); console.log(v)' \
    "$OUTPUTS" "$1" || die "the stack has no output '$1'"
}
PROJECT=$(output project)
REGION=$(output region)
GROUP=$(output instanceGroupManager)
SQL_IP=$(output sqlPrivateIp)
SQL_INSTANCE=$(output sqlInstance)
DB_NAME=$(output databaseName)
DB_USER=$(output databaseUser)
SECRET=$(output passwordSecret)

# A running worker VM: "ZONE NAME".
pick_vm() {
  local uri
  uri=$(gcloud compute instance-groups managed list-instances "$GROUP" --region "$REGION" --project "$PROJECT" \
    --filter='instanceStatus=RUNNING' --uri 2>/dev/null | head -n 1)
  [ -n "$uri" ] || die "no running VM in instance group $GROUP ($REGION)"
  local zone=${uri#*/zones/}
  echo "${zone%%/*} ${uri##*/}"
}

# Every CA the instance trusts (current and upcoming), like the workers' bundle, so a rotation breaks neither.
ca_file() {
  local file="${XDG_CACHE_HOME:-$HOME/.cache}/gcpmig-pgqueue/$SQL_INSTANCE-server-ca.pem"
  mkdir -p "$(dirname "$file")"
  gcloud sql ssl server-ca-certs list --instance "$SQL_INSTANCE" --project "$PROJECT" --format='value(cert)' > "$file"
  grep -q -- '-----BEGIN CERTIFICATE-----' "$file" || die "could not read the server CAs of $SQL_INSTANCE"
  echo "$file"
}

password() {
  gcloud secrets versions access latest --secret "${SECRET##*/}" --project "$PROJECT"
}

case "$COMMAND" in
  tunnel)
    PORT=${1:-15432}
    read -r ZONE VM < <(pick_vm)
    echo "db-tunnel: 127.0.0.1:$PORT -> $SQL_IP:5432 through $VM ($ZONE) over IAP; Ctrl-C closes" >&2
    echo "db-tunnel: in another shell: eval \"\$(scripts/db-tunnel.sh${STACK:+ --stack $STACK} env $PORT)\"" >&2
    # sshd answers a refused forward with "administratively prohibited" when AllowTcpForwarding is off;
    # say what still works instead of leaving a tunnel that silently drops every connection.
    status=0
    gcloud compute ssh "$VM" --zone "$ZONE" --project "$PROJECT" --tunnel-through-iap \
      -- -N -o ExitOnForwardFailure=yes -L "127.0.0.1:$PORT:$SQL_IP:5432" 2> >(tee "${TMPDIR:-/tmp}/db-tunnel.$$.err" >&2) ||
      status=$?
    if grep -q 'administratively prohibited' "${TMPDIR:-/tmp}/db-tunnel.$$.err" 2>/dev/null; then
      echo "db-tunnel: the VM's sshd refuses TCP forwarding; use 'scripts/db-tunnel.sh${STACK:+ --stack $STACK} run observe' instead" >&2
    fi
    rm -f "${TMPDIR:-/tmp}/db-tunnel.$$.err"
    exit "$status"
    ;;
  env)
    PORT=${1:-15432}
    CA=$(ca_file)
    PW=$(password)
    printf 'export PGHOST=127.0.0.1 PGPORT=%q PGDATABASE=%q PGUSER=%q PGSSLMODE=verify-ca PGSSLROOTCERT=%q\n' \
      "$PORT" "$DB_NAME" "$DB_USER" "$CA"
    printf 'export PGPASSWORD=%q\n' "$PW"
    printf 'unset DATABASE_URL\n'
    ;;
  psql)
    PORT=${1:-15432}
    command -v psql >/dev/null || die "psql is not installed"
    CA=$(ca_file)
    PGPASSWORD=$(password) exec psql "host=127.0.0.1 port=$PORT dbname=$DB_NAME user=$DB_USER sslmode=verify-ca sslrootcert=$CA"
    ;;
  run)
    SCRIPT=${1:?run needs add-jobs or observe}
    shift
    case "$SCRIPT" in
      add-jobs | observe) ;;
      *) die "run takes add-jobs or observe, not '$SCRIPT'" ;;
    esac
    read -r ZONE VM < <(pick_vm)
    REMOTE="sudo bash /var/lib/pgqueue/run.sh exec node dist/scripts/$SCRIPT.js"
    for arg in "$@"; do REMOTE="$REMOTE $(printf '%q' "$arg")"; done
    if [ -t 0 ] && [ -t 1 ]; then
      exec gcloud compute ssh "$VM" --zone "$ZONE" --project "$PROJECT" --tunnel-through-iap --command "$REMOTE" -- -t
    fi
    exec gcloud compute ssh "$VM" --zone "$ZONE" --project "$PROJECT" --tunnel-through-iap --command "$REMOTE"
    ;;
  *)
    sed -n '2,22p' "$0" >&2
    exit 2
    ;;
esac
