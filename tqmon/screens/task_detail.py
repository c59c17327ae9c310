"""``TaskDetailScreen``: one task: state timeline with the gaps between steps, args, kwargs,
result, exception, traceback, and links to its parent, root, children, worker, workflow and
failure signature (``enter`` on a link, or ``w`` ``f`` ``s``).

Everything shown came from untrusted events and is inert text (``tqcore.text.inert``); a
traceback keeps its newlines and nothing else.
"""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from tqmon.models import fmt
from tqmon.models.detail import Link, TaskDetail, task_detail
from tqmon.models.table import Cell
from tqmon.screens.actions import TASK_BINDINGS, TaskActions
from tqmon.screens.base import ViewScreen
from tqmon.widgets.toned import Toned


class TaskDetailScreen(TaskActions, ViewScreen):
    """One task (see the module docstring)."""

    VIEW = "task_detail"
    FILTERABLE = False
    BINDINGS = [
        *TASK_BINDINGS,
        Binding("w", "open_worker", "worker", show=False),
        Binding("f", "open_flow", "flow", show=False),
        Binding("s", "open_signature", "signature", show=False),
    ]

    def __init__(self, task_id: str) -> None:
        super().__init__(crumb=fmt.short_id(task_id))
        self.task_id = task_id
        self.detail: TaskDetail | None = None
        self._links: tuple[Link, ...] = ()

    def compose_body(self) -> ComposeResult:
        with VerticalScroll(id="detail-scroll"):
            yield Toned(id="detail-title", classes="detail-title")
            yield Toned(id="detail-facts")
            yield Toned(id="detail-timeline")
            yield OptionList(id="detail-links")
            yield Toned(id="detail-sections")

    def on_mount(self) -> None:
        self.query_one("#detail-links", OptionList).focus()

    def title_cells(self) -> list[Cell]:
        return [Cell(f"task {fmt.safe(self.task_id, 80)}", "dim")]

    def refresh_view(self) -> None:
        if not self.ready:
            return
        task = self.cluster.state.tasks.get(self.task_id)
        if task is None:
            self.query_one("#detail-title", Toned).show_cells(
                [Cell("task not stored (evicted, or never seen)", "warn")])
            return
        detail = task_detail(self.cluster, task)
        self.detail = detail
        self.query_one("#detail-title", Toned).show_cells(
            [Cell(f"{detail.glyph} {detail.name}", detail.tone), Cell(f"  {detail.id}", "dim")])
        facts = self.query_one("#detail-facts", Toned)
        text = Text(end="")
        for i, (label, cell) in enumerate(detail.facts):
            if i:
                text.append("\n" if i % 2 == 0 else "   ")
            text.append(f"{label:>10} ", facts.tone_style("dim"))
            text.append(f"{cell.text:<32}", facts.tone_style(cell.tone))
        facts.update(text)
        timeline = self.query_one("#detail-timeline", Toned)
        line = Text(end="")
        line.append("  timeline ", timeline.tone_style("dim"))
        for i, step in enumerate(detail.timeline):
            if i:
                line.append(f" ─{'+' + fmt.duration(step.gap) if step.gap is not None else ''}→ ",
                            timeline.tone_style("dim"))
            line.append(f"{step.label} {fmt.clock_time(step.at)}{f'{step.at % 1:.3f}'[1:]}",
                        timeline.tone_style(step.tone))
        timeline.update(line)
        if detail.links != self._links:
            self._links = detail.links
            links = self.query_one("#detail-links", OptionList)
            links.clear_options()
            links.add_options(Option(Text(link.label), id=f"{i}") for i, link in
                              enumerate(detail.links))
            if detail.links:
                links.highlighted = 0
        sections = self.query_one("#detail-sections", Toned)
        body = Text(end="")
        for title, content in detail.sections:
            body.append(f"\n{title}\n", sections.tone_style("accent"))
            tone = "err" if title in ("exception", "traceback") else ""
            body.append(content + "\n", sections.tone_style(tone))
        sections.update(body)

    @on(OptionList.OptionSelected, "#detail-links")
    def _link_chosen(self, event: OptionList.OptionSelected) -> None:
        if event.option.id is not None:
            self.follow(self._links[int(event.option.id)])

    def follow(self, link: Link) -> None:
        """Open what ``link`` points at, on top of this screen (esc comes back)."""
        if link.kind == "task":
            if link.target in self.cluster.state.tasks:
                self.app.push_screen(TaskDetailScreen(link.target))
            else:
                self.tq.flash_text(f"task {fmt.short_id(link.target)} is not stored", "warn")
        elif link.kind == "worker":
            from tqmon.screens.worker_detail import WorkerDetailScreen

            self.app.push_screen(WorkerDetailScreen(link.target))
        elif link.kind == "flow":
            from tqmon.screens.flow_detail import FlowDetailScreen

            self.app.push_screen(FlowDetailScreen(link.target))
        elif link.kind == "signature":
            from tqmon.screens.tasks import TasksScreen

            self.app.push_screen(TasksScreen(only=("signature", link.target),
                                             crumb=f"sig {link.target}"))

    def _open(self, kind: str) -> None:
        for link in self._links:
            if link.kind == kind:
                self.follow(link)
                return
        self.tq.flash_text(f"this task has no {kind}", "dim")

    def action_open_worker(self) -> None:
        self._open("worker")

    def action_open_flow(self) -> None:
        self._open("flow")

    def action_open_signature(self) -> None:
        self._open("signature")

    def selected_task_ids(self) -> list[str]:
        return [self.task_id]
