"""The global frame's content: header badge and connection pill, breadcrumbs, flash line.

Built fresh on each tick from the :class:`Cluster`; the frame widgets only draw these.
"""

from __future__ import annotations

from dataclasses import dataclass

from tqmon.contracts import ActionResult
from tqmon.models import fmt
from tqmon.models.cluster import Cluster
from tqmon.models.table import Cell


@dataclass(frozen=True, slots=True)
class FrameInfo:
    """The header line, as tone-carrying cells."""

    cells: tuple[Cell, ...]
    stale: bool


def pill(cluster: Cluster, paused: bool) -> Cell:
    """The connection pill: live / degraded / disconnected with retry countdown / paused /
    replay / connecting."""
    link = cluster.link
    now = cluster.now()
    detail = fmt.safe(link.detail, 60)
    if paused:
        return Cell("⏸ paused (p resumes)", "warn")
    if link.state == "live":
        return Cell("● live", "ok")
    if link.state == "degraded":
        return Cell(f"◐ degraded{f' ({detail})' if detail else ''}", "warn")
    if link.state == "disconnected":
        since = fmt.duration(now - cluster.link_since)
        retry = f" · retry in {fmt.duration(link.retry_in)}" if link.retry_in is not None else ""
        return Cell(f"○ disconnected {since}{retry}", "err")
    if link.state == "paused":
        return Cell("⏸ source paused", "warn")
    if link.state == "replay":
        if cluster.stale:
            return Cell(f"⏪ replay · {detail}", "err")
        return Cell(f"⏪ replay {fmt.clock_time(now)}{f' · {detail}' if detail else ''}", "info")
    return Cell("◌ connecting…", "dim")


def frame_info(cluster: Cluster, *, read_only: bool, paused: bool, broker: str) -> FrameInfo:
    """The header: ``tqmon · broker · pill · lag · ev/s · RO|RW · clock``."""
    lag = cluster.lag()
    sep = Cell(" · ", "dim")
    cells = [Cell(" tqmon ", "accent"), sep,
             Cell(fmt.safe(cluster.broker_label(broker) or "no broker", 80), "info"), sep,
             pill(cluster, paused), sep,
             Cell(f"lag {fmt.duration(lag)}", "warn" if lag is not None and lag > 5 else ""),
             sep, Cell(fmt.rate(cluster.events_per_second()).replace("/s", " ev/s")), sep,
             Cell("RO", "warn") if read_only else Cell("RW", "ok"), sep,
             Cell(fmt.clock_time(cluster.now()), "dim")]
    return FrameInfo(tuple(cells), cluster.stale)


def result_flash(result: ActionResult) -> tuple[tuple[Cell, ...], str]:
    """The flash line for a finished action: summary, then each worker's reply, "no reply"
    spelled out (never counted as success)."""
    kind = result.action.kind
    if result.refused:
        return (Cell(f"{kind}: refused: {fmt.safe(result.refused, 160)}", "warn"),), "warn"
    cells = [Cell(f"{kind}: {fmt.safe(result.summary, 160)}", "ok" if result.ok else "err")]
    for worker, reply in sorted(result.replies.items())[:8]:
        ok = _reply_ok(reply)
        cells.append(Cell(f"  {fmt.safe(worker, 40)}: {fmt.safe(_reply_text(reply), 60)}",
                          "ok" if ok else "err"))
    if len(result.replies) > 8:
        cells.append(Cell(f"  +{len(result.replies) - 8} more", "dim"))
    for worker in result.no_reply[:8]:
        cells.append(Cell(f"  {fmt.safe(worker, 40)}: no reply", "warn"))
    if len(result.no_reply) > 8:
        cells.append(Cell(f"  +{len(result.no_reply) - 8} more without reply", "warn"))
    tone = "ok" if result.ok and not result.no_reply else "warn" if result.ok else "err"
    return tuple(cells), tone


def _reply_ok(reply: object) -> bool:
    if isinstance(reply, dict):
        return "error" not in reply
    return True


def _reply_text(reply: object) -> str:
    if isinstance(reply, dict):
        if "error" in reply:
            return f"error: {reply['error']}"
        if "ok" in reply:
            return str(reply["ok"])
    return str(reply)
