"""`outlets.yaml`: which outlets exist, how each authenticates, which categories it sells.

Onboarding is configuration only: one entry plus a token in an environment variable. The file
is re-read when it changes (mtime/size), so neither the API nor the sync restarts. Validation
is per entry: a duplicate id, a missing token variable or an unknown category makes *that*
outlet unavailable and is reported, while every other outlet keeps working. A category 1C
removed, or one `category_tree` flags (its parent deleted, a cycle), is not unknown: the
outlet it roots holds that category's items, and only its feeds can tell it to delist them or
keep it current, so it stays available and is only warned about.

Tokens are never stored here: an outlet keeps only the SHA-256 digest of its token, so a
registry object can be logged, compared or put in metadata without leaking a secret.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

logger = logging.getLogger("catalog_assets.outlets")

DEFAULT_SILENT_AFTER_MINUTES = 15
OUTLET_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
KNOWN_KEYS = {"id", "name", "token_env", "categories", "silent_after_minutes"}


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Outlet:
    id: str
    name: str
    token_env: str
    categories: tuple[str, ...] | None  # None: the whole catalog
    silent_after_minutes: float = DEFAULT_SILENT_AFTER_MINUTES
    token_sha256: str | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Registry:
    """`outlets`: the valid entries. `problems`: outlet id (or `entry #n` when the entry has no
    usable id) -> why it is unavailable. `invalid`: the entries with a usable id that were
    refused, kept so the monitor can still show them and the API can name the problem to
    their owner. `error`: the whole file could not be used. `warnings`: valid outlets whose
    entry an operator should still fix (a root category 1C removed), shown failing by the
    monitor while the API keeps serving them."""

    outlets: dict[str, Outlet]
    problems: dict[str, str]
    invalid: dict[str, Outlet] = field(default_factory=dict)
    error: str | None = None
    warnings: dict[str, str] = field(default_factory=dict)

    def known(self, outlet_id: str) -> bool:
        return outlet_id in self.outlets or outlet_id in self.problems


def parse_registry(
    raw: Any,
    env: Mapping[str, str],
    known_categories: frozenset[str] | None,
    require_tokens: bool = True,
    unplaced_categories: Mapping[str, str] | None = None,
) -> Registry:
    """Validate the parsed YAML document entry by entry.

    `known_categories` is the set of valid category ids in the current snapshot, or None when
    there is none yet (categories cannot be judged then; the API cannot serve without a
    snapshot anyway). `require_tokens=False` is for processes that never authenticate
    outlets (the Dagster monitor), whose environment need not hold the tokens.

    `unplaced_categories` (id -> "removed", or the tree's flag) are in the snapshot but not
    placed in 1C's tree. Refusing an outlet rooted at one would stop its feeds before they
    deliver the removals of what it holds there (or the changes to it: outlets get 1C's view,
    flagged categories included), leaving it on sale in the store as it was: the root is
    served and warned about instead.
    """
    if raw is None:
        # An empty file is more likely one caught mid-rewrite than a chain with no outlets
        # (`outlets: []` says that): refused, so the last readable version stays in force.
        return Registry({}, {}, error="outlets.yaml is empty (write `outlets: []` for none)")
    if not isinstance(raw, dict) or not isinstance(raw.get("outlets", []), list):
        return Registry({}, {}, error="outlets.yaml must be a mapping with an `outlets:` list")
    entries = raw.get("outlets") or []
    ids = [e.get("id") if isinstance(e, dict) else None for e in entries]
    outlets: dict[str, Outlet] = {}
    invalid: dict[str, Outlet] = {}
    problems: dict[str, str] = {}
    notes: dict[str, list[str]] = {}  # outlet id -> what to fix that does not refuse it
    for position, entry in enumerate(entries, start=1):
        label = f"entry #{position}"
        if not isinstance(entry, dict):
            problems[label] = f"{label} is not a mapping"
            continue
        outlet_id = entry.get("id")
        if not isinstance(outlet_id, str) or not OUTLET_ID.match(outlet_id):
            problems[label] = (
                f"{label}: id must be 1-64 letters, digits, '-', '_' or '.', got {outlet_id!r}"
            )
            continue
        found: list[str] = []
        if ids.count(outlet_id) > 1:
            # Both copies are refused: guessing which one is meant could hand one outlet's
            # feed (and category filter) to the holder of the other's token.
            found.append(f"id {outlet_id!r} appears {ids.count(outlet_id)} times in outlets.yaml")
        unknown_keys = sorted(str(key) for key in set(entry) - KNOWN_KEYS)  # YAML keys vary
        if unknown_keys:
            found.append(f"unknown keys {unknown_keys} (expected {sorted(KNOWN_KEYS)})")
        name = entry.get("name", outlet_id)
        if not isinstance(name, str) or not name.strip():
            found.append("name must be a non-empty string")
            name = outlet_id
        token_env = entry.get("token_env")
        token_sha = None
        if not isinstance(token_env, str) or not ENV_NAME.match(token_env):
            # Not echoed: a token pasted here by mistake would reach logs and alerts.
            found.append(
                "token_env must name an environment variable (A-Z, 0-9, _); if the token "
                "itself was written there, rotate it"
            )
            token_env = ""
        else:
            # Stripped as the API strips the presented token: a secret mounted from a file
            # often ends with a newline, and would otherwise never match.
            token = (env.get(token_env) or "").strip()
            if token:
                token_sha = token_digest(token)
            elif require_tokens:
                found.append(f"token variable {token_env} is not set")
        silent = entry.get("silent_after_minutes", DEFAULT_SILENT_AFTER_MINUTES)
        if isinstance(silent, bool) or not isinstance(silent, int | float) or silent <= 0:
            found.append(f"silent_after_minutes must be a positive number, got {silent!r}")
            silent = DEFAULT_SILENT_AFTER_MINUTES
        categories = entry.get("categories")
        if categories is not None:
            if not isinstance(categories, list) or not all(
                isinstance(c, str) and c for c in categories
            ):
                found.append("categories must be a list of category ids")
                categories = None
            elif not categories:
                found.append("categories is empty: leave it out to get the whole catalog")
                categories = None
            else:
                if known_categories is not None:
                    unplaced = unplaced_categories or {}
                    unknown = [c for c in categories if c not in known_categories]
                    removed = [c for c in unknown if unplaced.get(c) == "removed"]
                    flagged = {
                        c: unplaced[c] for c in unknown if c in unplaced and c not in removed
                    }
                    unknown = [c for c in unknown if c not in unplaced]
                    if unknown:
                        found.append(f"unknown categories {unknown}")
                    if removed:
                        notes.setdefault(outlet_id, []).append(
                            f"categories {removed} were removed in 1C (their removals are "
                            "delivered; restore them in 1C or edit the entry)"
                        )
                    if flagged:
                        notes.setdefault(outlet_id, []).append(
                            f"categories {flagged} are flagged in category_tree (served as 1C "
                            "has them; fix their parent in 1C or edit the entry)"
                        )
                categories = tuple(dict.fromkeys(categories))
        outlet = Outlet(outlet_id, name, token_env, categories, float(silent), token_sha)
        if found:
            problems[outlet_id] = f"outlet {outlet_id}: " + "; ".join(
                found + notes.pop(outlet_id, [])
            )
            invalid[outlet_id] = outlet
        else:
            outlets[outlet_id] = outlet
    # Two outlets sharing a token could read each other's feeds: refuse both, refused
    # entries included (a copied entry with a mistake of its own still shares the token).
    holders: dict[str, list[str]] = {}
    for outlet in [*invalid.values(), *outlets.values()]:
        if outlet.token_sha256:
            holders.setdefault(outlet.token_sha256, []).append(outlet.id)
    for sharing in (ids for ids in holders.values() if len(ids) > 1):
        for outlet_id in sharing:
            others = ", ".join(o for o in sharing if o != outlet_id)
            shared = f"shares its token with {others}"
            if outlet_id in outlets:
                problems[outlet_id] = f"outlet {outlet_id}: " + "; ".join(
                    [shared, *notes.pop(outlet_id, [])]
                )
                invalid[outlet_id] = outlets.pop(outlet_id)
            else:
                problems[outlet_id] += f"; {shared}"
    warnings = {o: f"outlet {o}: " + "; ".join(noted) for o, noted in notes.items()}
    return Registry(outlets, problems, invalid, warnings=warnings)


def read_registry_file(path: str) -> Any:
    """The parsed YAML, or ValueError naming the file and the problem."""
    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    except FileNotFoundError:
        raise ValueError(f"outlet registry {path} does not exist (set OUTLETS_CONFIG)") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"outlet registry {path} is not valid YAML: {exc}") from None


class RegistryLoader:
    """Re-reads outlets.yaml when the file or the category set changes; keeps the last good
    registry when the file becomes unreadable, so a bad edit does not take every outlet down.

    `get()` takes the snapshot's (version, valid category ids) and its unplaced ones (removed or
    flagged), so the registry is re-validated when a new snapshot brings or removes categories.
    """

    def __init__(
        self,
        path: str,
        env: Mapping[str, str] | None = None,
        require_tokens: bool = True,
        on_reload: Callable[[Registry], None] | None = None,
    ) -> None:
        self.path = path
        self._env = env if env is not None else os.environ
        self._require_tokens = require_tokens
        self._on_reload = on_reload
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._registry = Registry({}, {}, error="outlet registry not loaded yet")
        self._last_good: Registry | None = None

    def get(
        self,
        categories: tuple[Any, frozenset[str] | None] = (None, None),
        unplaced: Mapping[str, str] | None = None,
    ) -> Registry:
        version, known = categories
        try:
            stat = os.stat(self.path)
            key: tuple = (stat.st_mtime_ns, stat.st_size, version)
        except OSError:
            key = ("missing", version)
        if key == self._key:
            return self._registry
        with self._lock:
            if key == self._key:
                return self._registry
            try:
                registry = parse_registry(
                    read_registry_file(self.path), self._env, known, self._require_tokens, unplaced
                )
            except ValueError as exc:
                registry = Registry({}, {}, error=str(exc))
            if registry.error and self._last_good is not None:
                registry = Registry(
                    self._last_good.outlets,
                    self._last_good.problems,
                    self._last_good.invalid,
                    error=f"{registry.error} (serving the last readable version)",
                    warnings=self._last_good.warnings,
                )
            elif not registry.error:
                self._last_good = registry
            for problem in [registry.error, *registry.problems.values()]:
                if problem:
                    logger.error("outlet registry %s: %s", self.path, problem)
            for warning in registry.warnings.values():
                logger.warning("outlet registry %s: %s", self.path, warning)
            self._registry, self._key = registry, key
            if self._on_reload is not None:
                self._on_reload(registry)
            return registry
