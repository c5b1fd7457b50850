#!/usr/bin/env bash
# `make demo`: the emulators on loopback, one full_resync recorded in a local Dagster
# instance, then `dagster dev` so the run, the asset graph and the sensor are in the UI.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV_BIN="$PWD/.venv/bin"
export DAGSTER_HOME="$PWD/.demo/dagster_home"
export ONEC_BASE_URL="http://127.0.0.1:${ONEC_PORT:-8081}"
export TEC_DELIVERY_URL="http://127.0.0.1:${TEC_PORT:-8082}/common/merchant/1.0/"
export TEC_DELIVERY_TOKEN="${TEC_DELIVERY_TOKEN:-demo-token}"
export CATALOG_DUCKDB_PATH="$PWD/.demo/catalog.duckdb"
mkdir -p "$DAGSTER_HOME"
cp dagster.yaml "$DAGSTER_HOME/dagster.yaml"

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

"$VENV_BIN/python" -m catalog_assets.emulators --onec-port "${ONEC_PORT:-8081}" --tec-port "${TEC_PORT:-8082}" \
  --token "$TEC_DELIVERY_TOKEN" > .demo/emulators.log 2>&1 &
pids+=($!)
for _ in $(seq 50); do
  curl -fs "$ONEC_BASE_URL/admin/stats" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fs "$ONEC_BASE_URL/admin/stats" >/dev/null || { cat .demo/emulators.log; exit 1; }

echo "== full_resync against the emulators (recorded in $DAGSTER_HOME)"
"$VENV_BIN/dagster" job execute -m catalog_assets.definitions -j full_resync 2>&1 \
  | grep -E "RUN_SUCCESS|RUN_FAILURE|pushed|fetched|STEP_FAILURE" || true

if [ "${DEMO_NO_UI:-0}" = "1" ]; then
  exit 0
fi
cat <<MSG

== Dagster UI: http://127.0.0.1:${DAGSTER_PORT:-3000}  (Ctrl-C stops everything)
   Edit the 1C emulator's catalog and watch onec_change_sensor start incremental_sync:
     curl -X PUT $ONEC_BASE_URL/admin/products/<id> -H 'Content-Type: application/json' -d '{"price": 199}'
   See what Tec.Delivery received:  curl http://127.0.0.1:${TEC_PORT:-8082}/admin/requests
MSG
"$VENV_BIN/dagster" dev -m catalog_assets.definitions -h 127.0.0.1 -p "${DAGSTER_PORT:-3000}"
