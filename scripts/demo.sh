#!/usr/bin/env bash
# `make demo`: the emulators on loopback, one full_resync recorded in a local Dagster
# instance, then `dagster dev` so the run, the asset graph and the sensor are in the UI.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
VENV_BIN="$PWD/.venv/bin"
export DAGSTER_HOME="$PWD/.demo/dagster_home"
export ONEC_BASE_URL="http://127.0.0.1:${ONEC_PORT:-8081}"
export TEC_DELIVERY_URL="http://127.0.0.1:${TEC_PORT:-8082}/common/merchant/1.0/"
export TEC_DELIVERY_TOKEN="${TEC_DELIVERY_TOKEN:-demo-token}"
export CATALOG_DUCKDB_PATH="$PWD/.demo/catalog.duckdb"
# The outlet hub: registry, snapshots beside the demo store, demo tokens for outlets.yaml.
export OUTLETS_CONFIG="$PWD/outlets.yaml"
export OUTLET_SNAPSHOT_DIR="$PWD/.demo/outlet_snapshots"
export OUTLET_STATE_PATH="$PWD/.demo/outlet_state.sqlite"
export OUTLET_CURSOR_SECRET="${OUTLET_CURSOR_SECRET:-demo-cursor-secret}"
export OUTLET_MSK_001_TOKEN="${OUTLET_MSK_001_TOKEN:-demo-msk-001}"
export OUTLET_SPB_002_TOKEN="${OUTLET_SPB_002_TOKEN:-demo-spb-002}"
export OUTLET_EKB_003_TOKEN="${OUTLET_EKB_003_TOKEN:-demo-ekb-003}"
OUTLET_API="http://127.0.0.1:${OUTLET_API_PORT:-8090}"
# The Tec.Delivery webhook receiver: the emulator calls it after "processing" each request.
export WEBHOOK_SECRET="${WEBHOOK_SECRET:-demo-webhook-secret}"
export WEBHOOK_SPOOL_PATH="$PWD/.demo/webhooks.sqlite"
WEBHOOK_BASE="http://127.0.0.1:${WEBHOOK_PORT:-8091}"
# Percent-encoded: a secret with `+`, `&`, `#` or `%` in it would otherwise arrive changed.
WEBHOOK_TOKEN=$("$VENV_BIN/python" -c \
  'import os, urllib.parse; print(urllib.parse.quote(os.environ["WEBHOOK_SECRET"], safe=""))')
export TEC_DELIVERY_WEBHOOK_URL="$WEBHOOK_BASE/tec-delivery/webhook?token=$WEBHOOK_TOKEN"
mkdir -p "$DAGSTER_HOME"
cp dagster.yaml "$DAGSTER_HOME/dagster.yaml"

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

# Something already listening on a port (an earlier demo, another tool) would answer the
# readiness checks below in place of ours, and the sync would run against it.
ports="ONEC_PORT:8081 TEC_PORT:8082 WEBHOOK_PORT:8091 OUTLET_API_PORT:8090"
[ "${DEMO_NO_UI:-0}" = "1" ] || ports="$ports DAGSTER_PORT:3000"
for port_var in $ports; do
  name=${port_var%%:*}
  port=${!name:-${port_var##*:}}
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port on 127.0.0.1 is in use: stop what listens there, or set $name" >&2
    exit 1
  fi
done

"$VENV_BIN/python" -m catalog_assets.emulators --onec-port "${ONEC_PORT:-8081}" --tec-port "${TEC_PORT:-8082}" \
  --token "$TEC_DELIVERY_TOKEN" > .demo/emulators.log 2>&1 &
pids+=($!)
for _ in $(seq 50); do
  curl -fs "$ONEC_BASE_URL/admin/stats" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fs "$ONEC_BASE_URL/admin/stats" >/dev/null || { cat .demo/emulators.log; exit 1; }

"$VENV_BIN/python" -m catalog_assets.webhooks --host 127.0.0.1 --port "${WEBHOOK_PORT:-8091}" \
  > .demo/webhooks.log 2>&1 &
pids+=($!)
for _ in $(seq 50); do
  curl -fs "$WEBHOOK_BASE/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fs "$WEBHOOK_BASE/healthz" >/dev/null || { cat .demo/webhooks.log; exit 1; }

echo "== full_resync against the emulators (recorded in $DAGSTER_HOME)"
status=0
# Dagster's CLI loads `.env` from its current directory over the environment: run from the
# instance directory, so a `.env` in the repo root (the real 1C and Tec.Delivery, as
# .env.example suggests) cannot turn the demo's sync against them or another DuckDB file.
(cd "$DAGSTER_HOME" && "$VENV_BIN/dagster" job execute -m catalog_assets.definitions -d "$ROOT" \
  -j full_resync) > .demo/full_resync.log 2>&1 || status=$?
grep -E "RUN_SUCCESS|RUN_FAILURE|pushed|fetched|published|STEP_FAILURE" .demo/full_resync.log || true
if [ "$status" -ne 0 ]; then
  echo "full_resync failed (exit $status); the whole log is in .demo/full_resync.log" >&2
  exit "$status"
fi

"$VENV_BIN/python" -m catalog_assets.outlet_api --host 127.0.0.1 --port "${OUTLET_API_PORT:-8090}" \
  > .demo/outlet_api.log 2>&1 &
pids+=($!)
for _ in $(seq 50); do
  curl -fs "$OUTLET_API/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fs "$OUTLET_API/healthz" >/dev/null || { cat .demo/outlet_api.log; exit 1; }
echo "== outlet API on $OUTLET_API (docs: $OUTLET_API/docs); msk-001 pulls once:"
"$VENV_BIN/python" -m catalog_assets.outlet_client --outlet msk-001 --base-url "$OUTLET_API" \
  --out .demo/msk-001.json

if [ "${DEMO_NO_UI:-0}" = "1" ]; then
  exit 0
fi
cat <<MSG

== Dagster UI: http://127.0.0.1:${DAGSTER_PORT:-3000}  (Ctrl-C stops everything)
   Edit the 1C emulator's catalog and watch onec_change_sensor start incremental_sync:
     curl -X PUT $ONEC_BASE_URL/admin/products/<id> -H 'Content-Type: application/json' -d '{"price": 199}'
   See what Tec.Delivery received:  curl http://127.0.0.1:${TEC_PORT:-8082}/admin/requests
   Pull as an outlet:  curl -H "Authorization: Bearer $OUTLET_SPB_002_TOKEN" "$OUTLET_API/v1/outlets/spb-002/changes?entity=prices&limit=5"
MSG
cd "$DAGSTER_HOME"  # not the repo root, for its `.env` (above)
"$VENV_BIN/dagster" dev -m catalog_assets.definitions -d "$ROOT" -h 127.0.0.1 -p "${DAGSTER_PORT:-3000}"
