"""What ``verify`` found: ``Verification``, which every check writes its problems and notes into."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

SHOWN = 20  # problems of one kind listed one by one; the rest are counted


@dataclass
class Verification:
    """What ``verify`` found: problems (tampering, exit status 5), notes (weaknesses), the unsealed tail."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unsealed: dict[str, int] = field(default_factory=dict)  # rows after each table's newest seal
    checked: dict[str, int] = field(default_factory=dict)   # rows whose chain was recomputed; touches' state
    counts: Counter = field(default_factory=Counter)        # problems per kind (listed up to SHOWN each)

    @property
    def intact(self) -> bool:
        return not self.problems

    def problem(self, kind: str, message: str) -> None:
        """Record a problem; past ``SHOWN`` of one kind only the count grows (a million edited rows stay readable)."""
        self.counts[kind] += 1
        if self.counts[kind] <= SHOWN:
            self.problems.append(message)

    def close(self) -> None:
        """Say how many problems of each kind were not listed."""
        for kind, count in self.counts.items():
            if count > SHOWN:
                self.problems.append(f"{kind}: {count - SHOWN} more problems of this kind not listed")

    def to_dict(self) -> dict[str, Any]:
        return {"intact": self.intact, "problems": self.problems, "notes": self.notes, "unsealed": self.unsealed,
                "checked": self.checked}
