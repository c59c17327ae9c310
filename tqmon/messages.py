"""Textual messages carrying the data side's items to the UI thread, and action results back.

The source thread calls ``post(item)``; the app wraps each item in one of these and posts it
(``post_message`` is thread-safe). Event batches are never coalesced (every event must be
folded); broker figures and link status are, since only the latest matters (Toolong's
``can_replace``).
"""

from __future__ import annotations

from textual.message import Message

from tqmon.contracts import Action, ActionResult, BrokerFigures, EventBatch, LinkStatus


class EventsArrived(Message, bubble=False):
    """A batch of events to fold into the state (never dropped)."""

    def __init__(self, batch: EventBatch) -> None:
        super().__init__()
        self.batch = batch


class FiguresArrived(Message, bubble=False):
    """Polled broker figures; a newer one replaces a pending older one."""

    def __init__(self, figures: BrokerFigures) -> None:
        super().__init__()
        self.figures = figures

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, FiguresArrived)


class LinkChanged(Message, bubble=False):
    """The source's health changed; a newer status replaces a pending older one."""

    def __init__(self, status: LinkStatus) -> None:
        super().__init__()
        self.status = status

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, LinkChanged)


class ActionDone(Message, bubble=False):
    """The command gate returned a result (ok, refused, or per-worker replies)."""

    def __init__(self, result: ActionResult) -> None:
        super().__init__()
        self.result = result


class ActionFailed(Message, bubble=False):
    """The command gate raised: the action's outcome is unknown."""

    def __init__(self, action: Action, error: str) -> None:
        super().__init__()
        self.action = action
        self.error = error
