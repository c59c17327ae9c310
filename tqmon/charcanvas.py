"""``CharCanvas``: a grid of characters where box-drawing lines merge into junctions.

Used by :mod:`tqmon.graph` to draw workflow edges: every line cell remembers which sides it
connects (up, down, left, right) and shows the matching glyph, so crossings and forks come out
as ``┼ ├ ┤ ┬ ┴`` without special cases.
"""

from __future__ import annotations

from dataclasses import dataclass

_U, _D, _L, _R = 1, 2, 4, 8
_JOINS = {
    _L | _R: "─", _U | _D: "│", _D | _R: "┌", _D | _L: "┐", _U | _R: "└", _U | _L: "┘",
    _U | _D | _R: "├", _U | _D | _L: "┤", _L | _R | _D: "┬", _L | _R | _U: "┴",
    _U | _D | _L | _R: "┼", _L: "─", _R: "─", _U: "│", _D: "│",
}


@dataclass(frozen=True, slots=True)
class Span:
    """A run of text with one tone (``ok``, ``err``, ``edge``, ``dim`` …; ``""`` for none)."""

    text: str
    tone: str = ""


class CharCanvas:
    """A character grid where lines merge into junctions (``─`` meeting ``│`` gives ``┼``,
    ``├``, ``┬`` … by which sides are connected); ``put`` writes fixed characters that lines
    never redraw (box borders, labels, arrows)."""

    def __init__(self, width: int, height: int) -> None:
        self.width = width
        self.height = height
        self.chars: list[list[str]] = [[" "] * width for _ in range(height)]
        self.tones: list[list[str]] = [[""] * width for _ in range(height)]
        self.masks: list[list[int]] = [[0] * width for _ in range(height)]

    def put(self, x: int, y: int, ch: str, tone: str) -> None:
        """Write a fixed character (outside the grid: ignored)."""
        if 0 <= y < self.height and 0 <= x < self.width:
            self.chars[y][x] = ch
            self.tones[y][x] = tone
            self.masks[y][x] = -1  # fixed: lines do not redraw it

    def _join(self, x: int, y: int, bits: int) -> None:
        if not (0 <= y < self.height and 0 <= x < self.width) or self.masks[y][x] < 0:
            return
        self.masks[y][x] |= bits
        self.chars[y][x] = _JOINS.get(self.masks[y][x], "┼")
        self.tones[y][x] = "edge"

    def hline(self, x1: int, x2: int, y: int, left: bool = True, right: bool = True) -> None:
        """A horizontal line; ``left``/``right``: its ends touch something (a box, an arrow)."""
        lo, hi = min(x1, x2), max(x1, x2)
        for x in range(lo, hi + 1):
            self._join(x, y, (_L if x > lo or left else 0) | (_R if x < hi or right else 0))

    def vline(self, x: int, y1: int, y2: int) -> None:
        """A vertical line from ``y1`` to ``y2`` (its ends join what they meet)."""
        lo, hi = min(y1, y2), max(y1, y2)
        for y in range(lo, hi + 1):
            self._join(x, y, (_U if y > lo else 0) | (_D if y < hi else 0))

    def box(self, x: int, y: int, width: int, label: str, info: str, tone: str,
            has_out: bool) -> None:
        """A 3-line box at ``(x, y)``: ``label`` left and ``info`` (dim) right on its middle
        line; its right border becomes ``├`` when an edge leaves it."""
        inner = width - 2
        self.put(x, y, "┌", tone)
        self.put(x, y + 2, "└", tone)
        for i in range(1, width - 1):
            self.put(x + i, y, "─", tone)
            self.put(x + i, y + 2, "─", tone)
        self.put(x + width - 1, y, "┐", tone)
        self.put(x + width - 1, y + 2, "┘", tone)
        self.put(x, y + 1, "│", tone)
        self.put(x + width - 1, y + 1, "├" if has_out else "│", tone)
        label = f" {label} "
        info = f"{info} "
        text = (label + info.rjust(inner - len(label)))[:inner]
        for i, ch in enumerate(text):
            self.put(x + 1 + i, y + 1, ch, tone if i < len(label) else "dim")

    def lines(self) -> tuple[tuple[Span, ...], ...]:
        """The grid as lines of same-tone spans."""
        out = []
        for chars, tones in zip(self.chars, self.tones, strict=True):
            spans: list[Span] = []
            for ch, tone in zip(chars, tones, strict=True):
                if spans and spans[-1].tone == tone:
                    spans[-1] = Span(spans[-1].text + ch, tone)
                else:
                    spans.append(Span(ch, tone))
            out.append(tuple(spans))
        return tuple(out)
