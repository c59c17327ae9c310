"""The scenario registry and runner: sizes per tier and the broker of each row, one fresh
cluster (and, for a server broker, one fresh private server) per scenario."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import time
import traceback
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.reliability.brokers import BrokerUnavailable
from bench.reliability.chaos import Cluster
from bench.reliability.report import Result

TIERS = ("ci", "soak")


class Skip(Exception):  # noqa: N818 - raised by a scenario that cannot run here
    """A scenario cannot run on this machine (the message says why)."""


@dataclasses.dataclass
class Spec:
    """A registered scenario: ``fn(cluster, result, sizes)`` fills ``result``.

    ``broker`` is the table's broker column (``sqlite``, ``redis``, ``rabbitmq``);
    ``server(directory)`` builds the private server of a server broker (started
    before ``fn`` runs unless ``start_broker`` is False), ``url(server)`` its URL.
    """

    id: str
    title: str
    fn: Callable[[Cluster, Result, dict[str, Any]], None]
    sizes: dict[str, dict[str, Any] | None]
    lease: float
    max_deliveries: int
    broker: str = "sqlite"
    server: Callable[[Path], Any] | None = None
    url: Callable[[Any], str] | None = None
    start_broker: bool = True


REGISTRY: dict[str, Spec] = {}


def scenario(sid: str, title: str, *, ci: dict[str, Any] | None, soak: dict[str, Any],
             lease: float = 2.0, max_deliveries: int = 5, broker: str = "sqlite",
             server: Callable[[Path], Any] | None = None,
             url: Callable[[Any], str] | None = None, start_broker: bool = True
             ) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register a scenario with its CI and soak sizes (``ci=None``: soak tier only) and
    its broker server, if any."""
    def register(fn: Callable[..., None]) -> Callable[..., None]:
        REGISTRY[sid] = Spec(sid, title, fn, {"ci": ci, "soak": soak}, lease, max_deliveries,
                             broker, server, url, start_broker)
        return fn
    return register


def load() -> dict[str, Spec]:
    """Import the scenario modules (they register themselves) and return the registry."""
    from bench.reliability import (  # noqa: F401
        broker_faults,
        broker_poison,
        crash,
        flow,
        workflow,
    )

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
    res = Result(sid, spec.title, s, broker=spec.broker)
    sizes = spec.sizes[tier]
    if sizes is None:
        res.skipped = f"not in the {tier} tier"
        return res
    made = base is None
    if base is None:
        base = Path(tempfile.mkdtemp(prefix=f"rel-{sid}-"))
    t0 = time.monotonic()
    try:
        server = spec.server(base / sid / "broker") if spec.server is not None else None
    except BrokerUnavailable as exc:  # a missing broker binary skips the row
        res.skipped = str(exc)
        if made:
            shutil.rmtree(base, ignore_errors=True)
        return res
    url = spec.url(server) if spec.url is not None and server is not None else None
    cluster = Cluster(base / sid, s, lease=spec.lease, max_deliveries=spec.max_deliveries,
                      broker_url=url, server=server)
    # The driver's own tqcore warnings (publish retries while a broker is down) go to
    # the scenario's directory, not the terminal.
    driver_log = logging.FileHandler(cluster.dir / "driver.log")
    driver_log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    tq_logger = logging.getLogger("tqcore")
    tq_logger.addHandler(driver_log)
    try:
        if server is not None and spec.start_broker:
            server.start()
        spec.fn(cluster, res, dict(sizes))
    except Skip as exc:
        res.skipped = str(exc)
    except Exception as exc:  # noqa: BLE001 - reported as the scenario's verdict
        res.error = f"{type(exc).__name__}: {exc}"
        res.figures["traceback"] = traceback.format_exc(limit=4).replace("\n", " / ")[-600:]
    finally:
        cluster.close()
        tq_logger.removeHandler(driver_log)
        driver_log.close()
        res.seconds = time.monotonic() - t0
        res.faults = res.faults or len(cluster.faults)
        res.figures["secs"] = round(res.seconds, 1)
        if made and not keep and res.ok:
            shutil.rmtree(base, ignore_errors=True)
        else:  # kept for a post-mortem: logs, ledger, broker file
            res.figures["dir"] = str(base / sid)
    return res
