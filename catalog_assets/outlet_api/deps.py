"""The API's long-lived parts (registry loader, snapshot reader, state file, cursor codec) and
the request-level steps that use them: authenticate, then read a page.

They live in one `OutletService` per app, created at startup, so tests can start an app on
their own paths and the module-level `app` reads the environment only when it starts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from fastapi import Request

from catalog_assets.outlet_api.config import RETRY_AFTER_SECONDS, ApiSettings
from catalog_assets.outlets.feeds import CursorCodec
from catalog_assets.outlets.registry import Registry, RegistryLoader, token_digest
from catalog_assets.outlets.snapshot import Snapshot, SnapshotReader, SnapshotUnavailable
from catalog_assets.outlets.state import OutletState, StateUnavailable, utc_now

logger = logging.getLogger("catalog_assets.outlet_api")


class ApiError(Exception):
    """Becomes `{"error": {"code", "message"}}` with `status`; messages never hold a token."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


def store_unavailable(message: str) -> ApiError:
    return ApiError(503, "store_unavailable", message, {"Retry-After": str(RETRY_AFTER_SECONDS)})


@dataclass
class View:
    """What one request sees: a registry judged against one snapshot (None: none published)."""

    registry: Registry
    snapshot: Snapshot | None
    snapshot_problem: str | None


class OutletService:
    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings
        self.state = OutletState(settings.state_path)
        self.reader = SnapshotReader(settings.snapshot_dir)
        self.codec = CursorCodec(settings.cursor_secret)
        # The newest registry whose problems the state file has not taken yet.
        self._unrecorded: Registry | None = None
        self._recording = threading.Lock()
        self.registry = RegistryLoader(settings.config_path, on_reload=self._reloaded)
        self._tokens: tuple[Registry | None, dict[str, str]] = (None, {})

    def _reloaded(self, registry: Registry) -> None:
        with self._recording:
            self._unrecorded = registry
            failure = self._record()
        if failure:
            logger.error(
                "could not record registry problems (tried again on each call): %s", failure
            )

    def _record(self) -> str | None:
        """The loader re-reads outlets.yaml only when it or the snapshot changes, so problems
        it found while the state file was unreadable are written by a later call, or the
        monitor (which cannot see an unset token variable itself) would not show them until
        the next edit. The caller holds `_recording`."""
        if self._unrecorded is not None:
            try:
                self.state.report_problems(self._unrecorded.problems, utc_now())
            except StateUnavailable as exc:
                return str(exc)
            self._unrecorded = None
        return None

    @contextmanager
    def view(self) -> Iterator[View]:
        """The current snapshot (held for the whole request, so a swap cannot close it) and
        the registry judged against it. Without a snapshot the registry is still loaded, so
        authentication answers as usual and the read itself answers 503."""
        try:
            with ExitStack() as stack:
                try:
                    snapshot: Snapshot | None = stack.enter_context(self.reader.acquire())
                    problem = None
                except SnapshotUnavailable as exc:
                    snapshot, problem = None, str(exc)
                categories = (
                    (snapshot.name, snapshot.valid_categories) if snapshot else (None, None)
                )
                unplaced = snapshot.unplaced_categories if snapshot else None
                registry = self.registry.get(categories, unplaced)
                # One call at a time retries: the others need not wait on a locked file twice.
                if self._unrecorded is not None and self._recording.acquire(blocking=False):
                    try:
                        self._record()
                    finally:
                        self._recording.release()
                yield View(registry, snapshot, problem)
        except SnapshotUnavailable as exc:  # the file broke while being read
            raise store_unavailable(str(exc)) from None

    def token_owners(self, registry: Registry) -> dict[str, str]:
        """Token digest -> outlet id, for valid and invalid entries alike (an invalid entry's
        owner is told what is wrong instead of a bare 401). Cached per registry object, held
        here: keyed by `id()`, a freed registry's address reused by a later one matched the
        cache, and a revoked token kept working."""
        cached, owners = self._tokens
        if cached is not registry:
            owners = {
                o.token_sha256: o.id
                for o in [*registry.invalid.values(), *registry.outlets.values()]
                if o.token_sha256
            }
            self._tokens = (registry, owners)
        return owners

    def authenticate(self, registry: Registry, outlet_id: str, authorization: str | None) -> None:
        """401 / 404 / 403 in that order: an unauthenticated caller learns nothing, not even
        which outlet ids exist."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "missing_token", "send Authorization: Bearer <outlet token>")
        owners = self.token_owners(registry)
        digest = token_digest(token)
        caller = owners.get(digest)  # a digest lookup: no secret-dependent comparison
        if caller is None and registry.error:
            # No readable outlets.yaml holds the token (an API started during a bad edit holds
            # none): our outage, not the outlet's credentials, which a 401 would blame.
            raise store_unavailable(
                "the outlet registry cannot be read now, so tokens cannot be checked"
            )
        if caller is None:
            raise ApiError(401, "invalid_token", "the bearer token is not valid for any outlet")
        if not registry.known(outlet_id):
            raise ApiError(404, "unknown_outlet", f"outlet {outlet_id!r} is not registered")
        if caller != outlet_id:
            raise ApiError(403, "forbidden", f"this token does not belong to outlet {outlet_id!r}")
        if outlet_id in registry.problems:
            raise ApiError(
                404,
                "outlet_unavailable",
                f"{registry.problems[outlet_id]} — fix its entry in outlets.yaml",
            )

    def close(self) -> None:
        self.reader.close()
        self.state.close()


def get_service(request: Request) -> OutletService:
    return request.app.state.outlets
