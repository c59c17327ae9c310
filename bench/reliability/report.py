"""Scenario results: one Markdown table row and one JSON object per scenario."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

HEADER = ("| id | broker | tasks | faults | lost | duplicates | phantom | recovery p50/p99"
          " | verdict | figures |")
RULE = "|---|---|---|---|---|---|---|---|---|---|"


@dataclasses.dataclass
class Check:
    """One invariant of a scenario."""

    name: str
    ok: bool
    detail: str = ""


@dataclasses.dataclass
class Result:
    """What one scenario measured.

    ``recovery`` is a list of per-event durations in seconds whose meaning the
    scenario names in ``recovery_label`` (kill → re-run, kill → pool refilled, …).
    """

    id: str
    title: str
    seed: int
    broker: str = "sqlite"
    tasks: int = 0
    faults: int = 0
    lost: int = 0
    duplicates: int = 0
    phantom: int = 0
    recovery: list[float] = dataclasses.field(default_factory=list)
    recovery_label: str = ""
    checks: list[Check] = dataclasses.field(default_factory=list)
    figures: dict[str, Any] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    error: str = ""
    #: Why the scenario could not run here (a missing binary or privilege), or "".
    skipped: str = ""

    def check(self, name: str, ok: bool, detail: Any = "") -> bool:
        """Record an invariant; returns ``ok``."""
        self.checks.append(Check(name, bool(ok), str(detail)))
        return bool(ok)

    @property
    def ok(self) -> bool:
        if self.skipped and not self.error:
            return True
        return not self.error and bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def verdict(self) -> str:
        if self.skipped and not self.error:
            return "SKIP"
        return "PASS" if self.ok else "FAIL"

    def failures(self) -> str:
        """The failed checks (and any error), one per line, for an assertion message."""
        lines = [f"{c.name}: {c.detail}" for c in self.checks if not c.ok]
        if self.error:
            lines.append(f"error: {self.error}")
        return "\n".join(lines) or "(no checks recorded)"

    def recovery_quantiles(self) -> tuple[float | None, float | None]:
        from bench.reliability.ledger import percentile

        return percentile(self.recovery, 0.5), percentile(self.recovery, 0.99)

    def row(self) -> str:
        """The Markdown table row."""
        p50, p99 = self.recovery_quantiles()
        rec = "–" if p50 is None else f"{p50:.2f}/{p99:.2f} s ({self.recovery_label})"
        figs = "; ".join(f"{k}={_fmt(v)}" for k, v in self.figures.items())
        if self.verdict == "SKIP":
            figs = f"skipped: {self.skipped}" + (f"; {figs}" if figs else "")
        verdict = self.verdict if self.ok else f"FAIL ({len([c for c in self.checks if not c.ok])}"\
            f" check(s){'; ' + self.error[:80] if self.error else ''})"
        return (f"| {self.id} | {self.broker} | {self.tasks} | {self.faults} | {self.lost}"
                f" | {self.duplicates} | {self.phantom} | {rec} | {verdict} | {figs} |")

    def as_dict(self) -> dict[str, Any]:
        p50, p99 = self.recovery_quantiles()
        return {"id": self.id, "title": self.title, "broker": self.broker, "seed": self.seed,
                "tasks": self.tasks, "faults": self.faults, "lost": self.lost,
                "duplicates": self.duplicates, "phantom": self.phantom,
                "recovery_p50": p50, "recovery_p99": p99, "recovery_label": self.recovery_label,
                "verdict": self.verdict, "seconds": round(self.seconds, 1),
                "figures": self.figures, "error": self.error, "skipped": self.skipped,
                "checks": [dataclasses.asdict(c) for c in self.checks]}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_fmt(v) for v in value) + "]"
    return str(value)


def table(results: list[Result]) -> str:
    """The Markdown table of ``results``."""
    return "\n".join([HEADER, RULE, *(r.row() for r in results)])


def dump_json(results: list[Result], path: str, meta: dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump({**meta, "results": [r.as_dict() for r in results]}, f, indent=2)
