"""The scenario registry and runner: sizes per tier, one fresh cluster per scenario."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
import traceback
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.reliability.chaos import Cluster
from bench.reliability.report import Result

TIERS = ("ci", "soak")


@dataclasses.dataclass
class Spec:
    """A registered scenario: ``fn(cluster, result, sizes)`` fills ``result``."""

    id: str
    title: str
    fn: Callable[[Cluster, Result, dict[str, Any]], None]
    sizes: dict[str, dict[str, Any]]
    lease: float
    max_deliveries: int


REGISTRY: dict[str, Spec] = {}


def scenario(sid: str, title: str, *, ci: dict[str, Any], soak: dict[str, Any],
             lease: float = 2.0, max_deliveries: int = 5
             ) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register a scenario with its CI and soak sizes."""
    def register(fn: Callable[..., None]) -> Callable[..., None]:
        REGISTRY[sid] = Spec(sid, title, fn, {"ci": ci, "soak": soak}, lease, max_deliveries)
        return fn
    return register


def load() -> dict[str, Spec]:
    """Import the scenario modules (they register themselves) and return the registry."""
    from bench.reliability import crash, flow, workflow  # noqa: F401

    return REGISTRY


def scenario_seed(seed: int, sid: str) -> int:
    """Each scenario's RNG seed: stable for a given base seed and id."""
    return (seed * 1_000_003 + zlib.crc32(sid.encode())) % (2**31)


def run(sid: str, tier: str = "ci", seed: int = 1, base: Path | None = None,
        keep: bool = False) -> Result:
    """Run one scenario in a fresh directory; every process it started is gone on return."""
    spec = load()[sid]
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {TIERS}")
    s = scenario_seed(seed, sid)
    res = Result(sid, spec.title, s)
    made = base is None
    if base is None:
        base = Path(tempfile.mkdtemp(prefix=f"rel-{sid}-"))
    cluster = Cluster(base / sid, s, lease=spec.lease, max_deliveries=spec.max_deliveries)
    t0 = time.monotonic()
    try:
        spec.fn(cluster, res, dict(spec.sizes[tier]))
    except Exception as exc:  # noqa: BLE001 - reported as the scenario's verdict
        res.error = f"{type(exc).__name__}: {exc}"
        res.figures["traceback"] = traceback.format_exc(limit=4).replace("\n", " / ")[-600:]
    finally:
        cluster.close()
        res.seconds = time.monotonic() - t0
        res.faults = res.faults or len(cluster.faults)
        res.figures["secs"] = round(res.seconds, 1)
        if made and not keep and res.ok:
            shutil.rmtree(base, ignore_errors=True)
        else:  # kept for a post-mortem: logs, ledger, broker file
            res.figures["dir"] = str(base / sid)
    return res
