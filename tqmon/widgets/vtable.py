"""``VirtualTable``: a keyed table that renders only the rows on screen (Line API).

Textual's ``DataTable`` keeps every row as widgets' data and has no lazy loading, which does not
scale to 100k tasks. This table holds a sequence of row *keys* and a ``row_for(key)`` function;
``render_line`` builds :class:`~tqmon.models.table.RowVM` cells only for visible lines. The
cursor and the marks follow keys, so a refresh that reorders or inserts rows never moves the
user's place. Tones map to component classes styled in ``app.tcss`` (no colours in Python).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from tqmon.models.table import TONES, Cell, Column, RowVM

RowFor = Callable[[str], RowVM]


def foreground(style: Style) -> Style:
    """``style`` without its background (component styles carry the widget's)."""
    return Style(color=style.color, bold=style.bold, dim=style.dim, italic=style.italic,
                 underline=style.underline, strike=style.strike, reverse=style.reverse)


class VirtualTable(ScrollView, can_focus=True):
    """A lazily rendered, keyed table with a cursor, marks and a sort column.

    | Key | Action |
    | --- | --- |
    | ↑/k ↓/j | move |
    | PgUp/PgDn, g/G (home/end) | page, first, last |
    | enter | activate the row (``Activated``) |
    | space | mark / unmark (when ``markable``) |
    | U | unmark all |
    | < > | previous / next sort column (``SortChanged``) |
    | I | invert the sort |
    """

    COMPONENT_CLASSES = {
        "vtable--header", "vtable--sorted", "vtable--cursor", "vtable--cursor-blur",
        "vtable--marked", *(f"vtable--{tone}" for tone in TONES),
    }

    DEFAULT_CSS = """
    VirtualTable { height: 1fr; }
    """

    BINDINGS = [
        Binding("up,k", "move(-1)", "up", show=False),
        Binding("down,j", "move(1)", "down", show=False),
        Binding("pageup", "page(-1)", "page up", show=False),
        Binding("pagedown", "page(1)", "page down", show=False),
        Binding("home,g", "first", "first", show=False),
        Binding("end,G", "last", "last", show=False),
        Binding("enter", "activate", "open", show=False),
        Binding("space", "toggle_mark", "mark", show=False),
        Binding("U", "unmark_all", "unmark all", show=False),
        Binding("less_than_sign", "sort_column(-1)", "sort ◀", show=False),
        Binding("greater_than_sign", "sort_column(1)", "sort ▶", show=False),
        Binding("I", "invert_sort", "invert sort", show=False),
    ]

    class CursorMoved(Message):
        """The cursor is on another row (``key`` None: the table is empty)."""

        def __init__(self, table: VirtualTable, key: str | None) -> None:
            super().__init__()
            self.table = table
            self.key = key

        @property
        def control(self) -> VirtualTable:
            return self.table

    class Activated(Message):
        """Enter (or a double click) on a row."""

        def __init__(self, table: VirtualTable, key: str) -> None:
            super().__init__()
            self.table = table
            self.key = key

        @property
        def control(self) -> VirtualTable:
            return self.table

    class SortChanged(Message):
        """The user chose another sort column or direction."""

        def __init__(self, table: VirtualTable, column: int, reverse: bool) -> None:
            super().__init__()
            self.table = table
            self.column = column
            self.reverse = reverse

        @property
        def control(self) -> VirtualTable:
            return self.table

    class MarksChanged(Message):
        """Rows were marked or unmarked."""

        def __init__(self, table: VirtualTable) -> None:
            super().__init__()
            self.table = table

        @property
        def control(self) -> VirtualTable:
            return self.table

    def __init__(self, columns: Sequence[Column], *, markable: bool = False, sort_column: int = 0,
                 sort_reverse: bool = False, name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.columns = tuple(columns)
        self.markable = markable
        self.sort_column = sort_column
        self.sort_reverse = sort_reverse
        self.marked: set[str] = set()
        #: Index of the cursor row in the current keys.
        self.cursor_index = 0
        self._keys: Sequence[str] = ()
        self._row_for: RowFor | None = None
        self._cursor_key: str | None = None
        self._widths: list[int] = []
        self._cache: dict[tuple[str, bool, bool], Strip] = {}

    # -- data ----------------------------------------------------------------------------
    @property
    def row_count(self) -> int:
        return len(self._keys)

    @property
    def keys(self) -> Sequence[str]:
        """The row keys, in display order."""
        return self._keys

    @property
    def cursor_key(self) -> str | None:
        """The key under the cursor (None when empty)."""
        return self._cursor_key

    def set_rows(self, keys: Sequence[str], row_for: RowFor) -> None:
        """Show ``keys`` (display order) with rows built on demand by ``row_for``.

        The cursor stays on the same key when it is still present (else at the same index).
        """
        old_key, old_index = self._cursor_key, self.cursor_index
        self._keys = keys
        self._row_for = row_for
        self._cache.clear()
        index = old_index
        if old_key is not None:
            try:
                index = keys.index(old_key) if isinstance(keys, list) else list(keys).index(old_key)
            except ValueError:
                index = old_index
        index = max(0, min(index, len(keys) - 1))
        self.virtual_size = Size(self._content_width(), len(keys) + 1)
        new_key = keys[index] if keys else None
        self._cursor_key = new_key
        self.cursor_index = index
        if new_key != old_key:
            self.post_message(self.CursorMoved(self, new_key))
        self._scroll_cursor_visible()
        self.refresh()

    def invalidate(self) -> None:
        """Redraw the visible rows (their content changed, not their order)."""
        self._cache.clear()
        self.refresh()

    def move_to(self, key: str) -> bool:
        """Put the cursor on ``key``; False when no such row."""
        try:
            index = list(self._keys).index(key)
        except ValueError:
            return False
        self._set_cursor(index)
        return True

    def marked_keys(self) -> list[str]:
        """Marked keys still present, in display order."""
        if not self.marked:
            return []
        return [k for k in self._keys if k in self.marked]

    def selection(self) -> list[str]:
        """The marked rows if any, else the cursor row."""
        marked = self.marked_keys()
        if marked:
            return marked
        return [self._cursor_key] if self._cursor_key is not None else []

    # -- geometry ------------------------------------------------------------------------
    def _layout(self, width: int) -> list[int]:
        widths = [max(c.width, len(c.label) + 2) for c in self.columns]
        fixed = sum(widths) + len(self.columns) + 3
        flex = [i for i, c in enumerate(self.columns) if c.flex]
        extra = max(0, width - fixed)
        if flex and extra:
            share, rest = divmod(extra, len(flex))
            for n, i in enumerate(flex):
                widths[i] += share + (1 if n < rest else 0)
        return widths

    def _content_width(self) -> int:
        widths = self._widths or [max(c.width, len(c.label) + 2) for c in self.columns]
        return sum(widths) + len(self.columns) + 2

    def on_resize(self, event: events.Resize) -> None:
        self._widths = self._layout(self.scrollable_content_region.width or event.size.width)
        self._cache.clear()
        self.virtual_size = Size(self._content_width(), len(self._keys) + 1)
        self._scroll_cursor_visible()

    @property
    def _page(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

    def _scroll_cursor_visible(self) -> None:
        index = self.cursor_index
        top = round(self.scroll_y)
        if index < top:
            self.scroll_to(y=index, animate=False, force=True)
        elif index >= top + self._page:
            self.scroll_to(y=index - self._page + 1, animate=False, force=True)

    # -- rendering -----------------------------------------------------------------------
    def _style(self, *names: str) -> Style:
        return self.get_component_rich_style(*names, default=Style())

    def _tone(self, tone: str) -> Style:
        """A tone's foreground and text style only (the row keeps its background)."""
        return foreground(self._style(f"vtable--{tone}"))

    def _cell_text(self, cell: Cell, width: int, justify: str, base: Style) -> Text:
        text = Text(cell.text, style=base, no_wrap=True, end="")
        if cell.tone:
            text.stylize(self._tone(cell.tone))
        if cell_len(cell.text) > width:
            text.truncate(width, overflow="ellipsis")
        pad = width - text.cell_len
        if pad > 0:
            if justify == "right":
                text = Text(" " * pad, style=base, end="") + text
            else:
                text.append(" " * pad, style=base)
        return text

    def _render_row(self, row: RowVM, cursor: bool, marked: bool) -> Strip:
        base = Style()
        if row.tone:
            base = self._tone(row.tone)
        line = Text(no_wrap=True, end="")
        line.append("● " if marked else "  ", self._tone("marked") if marked else base)
        widths = self._widths or [c.width for c in self.columns]
        for column, cell, width in zip(self.columns, row.cells, widths, strict=False):
            line.append_text(self._cell_text(cell, width, column.justify, base))
            line.append(" ")
        if row.tone:
            line.stylize(base)
        if cursor:
            name = "vtable--cursor" if self.has_focus else "vtable--cursor-blur"
            line.stylize(self._style(name))
        elif marked:
            line.stylize(self._tone("marked"))
        segments = list(line.render(self.app.console))
        return Strip(segments, line.cell_len)

    def _render_header(self) -> Strip:
        header = self._style("vtable--header")
        line = Text("  ", style=header, no_wrap=True, end="")
        widths = self._widths or [c.width for c in self.columns]
        for i, (column, width) in enumerate(zip(self.columns, widths, strict=False)):
            label = column.label
            if i == self.sort_column:
                label += " ▼" if self.sort_reverse else " ▲"
            cell = Cell(label, "")
            text = self._cell_text(cell, width, column.justify, header)
            if i == self.sort_column:
                text.stylize(self._tone("sorted"))
            line.append_text(text)
            line.append(" ", header)
        return Strip(list(line.render(self.app.console)), line.cell_len)

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        if y == 0:
            header = self._render_header()
            return header.crop_extend(scroll_x, scroll_x + width, self._style("vtable--header"))
        index = scroll_y + y - 1
        if index >= len(self._keys) or self._row_for is None:
            return Strip.blank(width, self.rich_style)
        key = self._keys[index]
        cursor = index == self.cursor_index
        marked = key in self.marked
        cache_key = (key, cursor, marked)
        cached = self._cache.get(cache_key)
        if cached is None:
            cached = self._cache[cache_key] = self._render_row(self._row_for(key), cursor, marked)
        return cached.crop_extend(scroll_x, scroll_x + width, self.rich_style).simplify()

    # -- cursor and keys -----------------------------------------------------------------
    def _set_cursor(self, index: int) -> None:
        if not self._keys:
            return
        index = max(0, min(index, len(self._keys) - 1))
        old = self.cursor_index
        self.cursor_index = index
        self._cursor_key = self._keys[index]
        self._cache.clear()
        self._scroll_cursor_visible()
        self.refresh()
        if index != old:
            self.post_message(self.CursorMoved(self, self._cursor_key))

    def action_move(self, delta: int) -> None:
        self._set_cursor(self.cursor_index + delta)

    def action_page(self, direction: int) -> None:
        self._set_cursor(self.cursor_index + direction * self._page)

    def action_first(self) -> None:
        self._set_cursor(0)

    def action_last(self) -> None:
        self._set_cursor(len(self._keys) - 1)

    def action_activate(self) -> None:
        if self._cursor_key is not None:
            self.post_message(self.Activated(self, self._cursor_key))

    def action_toggle_mark(self) -> None:
        if not self.markable or self._cursor_key is None:
            return
        self.marked ^= {self._cursor_key}
        self.post_message(self.MarksChanged(self))
        self._set_cursor(self.cursor_index + 1)
        self._cache.clear()
        self.refresh()

    def action_unmark_all(self) -> None:
        if self.marked:
            self.marked.clear()
            self._cache.clear()
            self.refresh()
            self.post_message(self.MarksChanged(self))

    def action_sort_column(self, delta: int) -> None:
        self.sort_column = (self.sort_column + delta) % len(self.columns)
        self.post_message(self.SortChanged(self, self.sort_column, self.sort_reverse))
        self.refresh()

    def action_invert_sort(self) -> None:
        self.sort_reverse = not self.sort_reverse
        self.post_message(self.SortChanged(self, self.sort_column, self.sort_reverse))
        self.refresh()

    def on_click(self, event: events.Click) -> None:
        index = round(self.scroll_y) + event.y - 1
        if event.y >= 1 and 0 <= index < len(self._keys):
            self._set_cursor(index)
            if event.chain >= 2:
                self.action_activate()

    def on_focus(self) -> None:
        self._cache.clear()
        self.refresh()

    def on_blur(self) -> None:
        self._cache.clear()
        self.refresh()
