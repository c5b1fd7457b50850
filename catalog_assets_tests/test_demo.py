"""`make demo` (scripts/demo.sh) syncs the bundled emulators into `.demo/`, whatever `.env` says.

Dagster's CLI loads `.env` from its current directory and lets it override the environment, and
`.env.example` invites a `.env` in the repo root for the real 1C and Tec.Delivery. The demo must
not pick that up: its full_resync (and `dagster dev`'s sensors) would otherwise read and write
whatever `.env` names (here only a DuckDB path, so nothing leaves loopback).
"""

import os
import shutil
import subprocess
from pathlib import Path

from catalog_assets_tests.outlets.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]


def test_the_demo_ignores_a_dotenv_in_the_repo_root(tmp_path):
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "demo.sh", repo / "scripts" / "demo.sh")
    for name in ("dagster.yaml", "outlets.yaml"):
        shutil.copy(ROOT / name, repo / name)
    (repo / ".venv").symlink_to(ROOT / ".venv")
    (repo / "catalog_assets").symlink_to(ROOT / "catalog_assets")
    elsewhere = tmp_path / "from-dotenv.duckdb"
    (repo / ".env").write_text(f"CATALOG_DUCKDB_PATH={elsewhere}\n", encoding="utf-8")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ONEC_", "TEC_", "OUTLET", "WEBHOOK_", "CATALOG_", "DAGSTER_"))
    }
    env.update(
        DEMO_NO_UI="1",
        ONEC_PORT=str(free_port()),
        TEC_PORT=str(free_port()),
        WEBHOOK_PORT=str(free_port()),
        OUTLET_API_PORT=str(free_port()),
    )
    demo = subprocess.run(
        ["bash", str(repo / "scripts" / "demo.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    log = repo / ".demo" / "full_resync.log"
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert not elsewhere.exists(), log.read_text(encoding="utf-8")[-2000:]
    assert (repo / ".demo" / "catalog.duckdb").exists()
