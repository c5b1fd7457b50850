"""The package imports only what `pip install .` installs.

`make` installs the dev extras too, so a runtime import of a dev-only library (the reference
outlet client once imported httpx) passes every test here and fails on a production install.
"""

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def declared_distributions() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {
        _normalize(re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0])
        for spec in project["dependencies"]
    }


def imported_modules() -> dict[str, set[str]]:
    """Top-level third-party modules the package imports, with the files that import them."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / "catalog_assets").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "catalog_assets":
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_library_is_a_declared_dependency():
    declared = declared_distributions()
    providers = importlib.metadata.packages_distributions()
    imported = imported_modules()
    assert {"dagster", "duckdb", "urllib3"} <= imported.keys()  # the scan sees real imports
    undeclared = {
        module: sorted(files)
        for module, files in imported.items()
        if not {_normalize(d) for d in providers.get(module, [])} & declared
    }
    assert not undeclared, f"imported but not in [project.dependencies]: {undeclared}"


def test_every_declared_dependency_is_imported():
    """The reverse: a dependency nothing imports is one more thing to install, pin and audit,
    and the README's Dependencies list would describe what the code no longer does."""
    providers = importlib.metadata.packages_distributions()
    used = {_normalize(d) for module in imported_modules() for d in providers.get(module, [])}
    # The UI: started as `dagster dev` / `dagster-webserver`, never imported. pandas: a core
    # package of the platform's brief, for whoever reads the store (README, Dependencies).
    unused = declared_distributions() - used - {"dagster-webserver", "pandas"}
    assert not unused, f"in [project.dependencies] but imported nowhere: {sorted(unused)}"
