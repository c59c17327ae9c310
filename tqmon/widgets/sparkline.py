"""``Spark``: a one-line sparkline that fills its width, with ``·`` for gaps (no data).

Unlike Textual's ``Sparkline`` it shows missing samples (a broker outage, missed polls) as gaps
instead of interpolating over them, so a dashboard never draws data it did not see.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text

from tqmon.models import fmt
from tqmon.widgets.toned import Toned


class Spark(Toned):
    """A sparkline of ``values`` (newest last) in ``tone``, with an optional label."""

    DEFAULT_CSS = """
    Spark { height: 1; }
    """

    def __init__(self, label: str = "", tone: str = "info", *, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.label = label
        self.tone = tone
        self.values: list[float | None] = []

    def set_values(self, values: Sequence[float | None]) -> None:
        """Show ``values`` (the newest that fit)."""
        self.values = list(values)
        self.refresh_spark()

    def refresh_spark(self) -> None:
        width = max(1, self.size.width - len(self.label) - 1) if self.size.width else 30
        text = Text(no_wrap=True, end="")
        if self.label:
            text.append(self.label + " ", self.tone_style("dim"))
        text.append(fmt.spark(self.values, width, stretch=True), self.tone_style(self.tone))
        self.update(text)

    def on_resize(self) -> None:
        self.refresh_spark()
