"""``ViewScreen``: the frame every view shares, and the plumbing common to all views.

Layout (UX spec §3.1)::

    header   tqmon · broker · ● live · lag · ev/s · RW · 14:02:11
    crumbs   Overview › Queues › emails      showing 3 of 3 · sorted by DEPTH ▼
    <the view's body>
    flash    revoke: 2 ok   w1@ops-a: ok   w2@ops-b: no reply
    keybar   1 Overview 2 Workers … │ : cmd / filter ? help p pause x revoke …

Each main view is the base screen of an app *mode* (keys ``1``-``7``), so each keeps its own
drill-down stack: ``enter`` pushes, ``esc`` clears the filter first, then pops. The app calls
:meth:`ViewScreen.refresh_frame` and :meth:`ViewScreen.refresh_view` on its throttled timer;
views never poll anything themselves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen

from tqmon.models import fmt
from tqmon.models.filtering import Filter, FilterError, compile_filter
from tqmon.models.table import Cell
from tqmon.widgets.crumbs import Crumbs
from tqmon.widgets.flash import FlashLine
from tqmon.widgets.header import FrameHeader
from tqmon.widgets.keybar import KeyBar

if TYPE_CHECKING:
    from tqmon.app import TqmonApp
    from tqmon.models.cluster import Cluster


class ViewScreen(Screen[None]):
    """A tqmon view inside the global frame.

    | Key | Action |
    | --- | --- |
    | / | filter this view |
    | : | command mode |
    | ? | help for this view |
    | esc | clear the filter, else go back |
    | p | pause / resume |
    """

    #: The view name used for key hints and help (``tasks``, ``task_detail`` …).
    VIEW: ClassVar[str] = "overview"
    #: Whether ``/`` applies to this view.
    FILTERABLE: ClassVar[bool] = True

    BINDINGS = [
        Binding("slash", "filter", "filter", show=False),
        Binding("colon", "command", "command", show=False),
        Binding("question_mark", "help", "help", show=False),
        Binding("escape", "back", "back", show=False),
        Binding("p", "app.pause", "pause", show=False),
    ]

    def __init__(self, *, filter_text: str = "", crumb: str | None = None) -> None:
        super().__init__()
        self.filter: Filter | None = None
        self.filter_text = ""
        #: True once mounted with its children, False again when unmounted: the app's timer
        #: may call the refresh methods at any moment in between, never outside.
        self.ready = False
        self._crumb = crumb
        if filter_text:
            self.set_filter(filter_text)

    # -- access --------------------------------------------------------------------------
    @property
    def tq(self) -> TqmonApp:
        """The app, typed."""
        return cast("TqmonApp", self.app)

    @property
    def cluster(self) -> Cluster:
        return self.tq.cluster

    # -- composition ---------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield FrameHeader(id="header")
        yield Crumbs(id="crumbs")
        with Vertical(id="body"):
            yield from self.compose_body()
        yield FlashLine(id="flash")
        yield KeyBar(id="keybar")

    def compose_body(self) -> ComposeResult:
        """The view's own widgets (between the crumbs and the flash line)."""
        yield from ()

    def on_mount(self) -> None:
        self.ready = True
        self.refresh_frame()
        self.refresh_view()

    def on_unmount(self) -> None:
        self.ready = False

    def on_screen_resume(self) -> None:
        self.refresh_frame()
        self.refresh_view()

    # -- refreshing ----------------------------------------------------------------------
    def crumb(self) -> str:
        """This screen's label in the breadcrumbs."""
        from tqmon.models.keys import VIEW_TITLES

        return self._crumb or VIEW_TITLES.get(self.VIEW, self.VIEW.title())

    def title_cells(self) -> list[Cell]:
        """The view's title line (counts, sort, marks, filter)."""
        return self.filter_cells()

    def filter_cells(self) -> list[Cell]:
        if self.filter_text:
            return [Cell(f"filter /{fmt.safe(self.filter_text, 120)}", "accent"),
                    Cell("esc clears", "dim")]
        return []

    def refresh_frame(self) -> None:
        """Redraw the header, crumbs, flash line and key bar from the app's state."""
        if not self.ready:
            return
        app = self.tq
        self.query_one(FrameHeader).show_info(app.frame_info())
        path = [s.crumb() for s in app.screen_stack if isinstance(s, ViewScreen)]
        self.query_one(Crumbs).show_path(path, self.title_cells())
        cells, tone = app.flash_cells
        self.query_one(FlashLine).flash(cells, tone)
        self.query_one(KeyBar).show_keys(self.VIEW, app.current_mode, app.read_only,
                                         self.FILTERABLE)
        self.set_class(self.cluster.stale, "stale")

    def refresh_view(self) -> None:
        """Redraw the view's body from the cluster (subclasses)."""

    # -- filter --------------------------------------------------------------------------
    def set_filter(self, text: str) -> FilterError | None:
        """Apply ``text`` as this view's filter; returns the error when it does not parse."""
        compiled = compile_filter(text)
        if isinstance(compiled, FilterError):
            return compiled
        self.filter = compiled
        self.filter_text = text.strip()
        if self.ready:
            self.refresh_view()
            self.refresh_frame()
        return None

    def action_filter(self) -> None:
        if not self.FILTERABLE:
            self.tq.flash_text("this view has no filter", "dim")
            return
        from tqmon.screens.prompt import PromptScreen

        self.app.push_screen(PromptScreen("filter", self.filter_text, validate=self.set_filter,
                                          history=self.tq.filter_history))

    def action_command(self) -> None:
        from tqmon.screens.prompt import PromptScreen

        self.app.push_screen(PromptScreen("command", "", validate=self.tq.run_command,
                                          history=self.tq.command_history,
                                          suggestions=self.tq.command_words()))

    def action_help(self) -> None:
        from tqmon.screens.help import HelpScreen

        self.app.push_screen(HelpScreen(self.VIEW, self.crumb(), self.tq.read_only))

    def action_back(self) -> None:
        if self.filter_text:
            self.set_filter("")
            return
        if len(self.app.screen_stack) > 1:
            self.app.pop_screen()
