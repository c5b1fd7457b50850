"""The fault suite's counts: what it injected and tried, and how many items it checked.

Plain module, not the conftest, because the summary is printed by the root conftest: with
test workers (pytest-xdist) each worker counts its own tests and the controller, which never
loads `faults/conftest.py`, adds them up.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass
class Ledger:
    faults: dict[str, int] = field(default_factory=dict)
    bad_inputs: dict[str, int] = field(default_factory=dict)
    items_checked: int = 0
    items_lost: int = 0

    def fault(self, kind: str, n: int = 1) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + n

    def bad_input(self, kind: str, n: int = 1) -> None:
        self.bad_inputs[kind] = self.bad_inputs.get(kind, 0) + n

    def settle(self, expected: set[str], delivered: set[str]) -> set[str]:
        """Record how many expected items reached Tec.Delivery; return the ones that did not."""
        lost = expected - delivered
        self.items_checked += len(expected)
        self.items_lost += len(lost)
        return lost

    def dumps(self) -> str:
        return json.dumps(asdict(self))

    def add(self, raw: str) -> None:
        other = json.loads(raw)
        for kind, n in other["faults"].items():
            self.fault(kind, n)
        for kind, n in other["bad_inputs"].items():
            self.bad_input(kind, n)
        self.items_checked += other["items_checked"]
        self.items_lost += other["items_lost"]

    def report(self, terminalreporter) -> None:
        if not (self.faults or self.bad_inputs):
            return
        terminalreporter.write_sep("-", "fault-injection ledger")
        terminalreporter.write_line(
            f"faults injected: {sum(self.faults.values())} {dict(sorted(self.faults.items()))}"
        )
        terminalreporter.write_line(
            f"bad inputs tried: {sum(self.bad_inputs.values())} "
            f"{dict(sorted(self.bad_inputs.items()))}"
        )
        terminalreporter.write_line(
            f"items checked for delivery: {self.items_checked}, items lost: {self.items_lost}"
        )


LEDGER = Ledger()
