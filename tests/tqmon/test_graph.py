"""``tqmon.graph``: layered left-to-right drawing and tree fallback of workflow runs (pure)."""

from __future__ import annotations

from types import MappingProxyType

from tqcore.events import (
    State,
    WorkflowChord,
    WorkflowEdge,
    WorkflowGraph,
    WorkflowGroup,
    WorkflowNode,
    WorkflowSummary,
)
from tqmon.graph import TREE_ABOVE, Drawing, layout


def node(id_: str, name: str, state: str | None = "SUCCESS", parent: str | None = None,
         group: str | None = None, index: int | None = None,
         runtime: float | None = 0.2) -> WorkflowNode:
    return WorkflowNode(id_, name, state, parent, group, index, None, "w1", runtime, None)


def graph(nodes: list[WorkflowNode], edges: list[tuple[str, str, str]],
          groups: tuple[WorkflowGroup, ...] = (),
          chords: tuple[WorkflowChord, ...] = ()) -> WorkflowGraph:
    counts: dict[str, int] = {}
    for n in nodes:
        if n.state:
            counts[n.state] = counts.get(n.state, 0) + 1
    summary = WorkflowSummary(nodes[0].id, nodes[0].name, len(nodes), len(nodes), 0, "STARTED",
                              0.0, None, 3.0, 3.0, MappingProxyType(counts))
    return WorkflowGraph(nodes[0].id, summary, tuple(nodes),
                         tuple(WorkflowEdge(s, t, k) for s, t, k in edges), groups, chords)


def chain() -> WorkflowGraph:
    return graph([node("a", "validate"), node("b", "reserve", parent="a"),
                  node("c", "charge", "FAILURE", parent="b")],
                 [("a", "b", "parent"), ("b", "c", "parent")])


def chord(failed: int = 1) -> WorkflowGraph:
    members = [node(f"m{i}", "charge", "FAILURE" if i < failed else "SUCCESS", group="g", index=i)
               for i in range(5)]
    body = WorkflowNode("body", "notify", None, None, None, None, None, None, None, None)
    group = WorkflowGroup("g", tuple(m.id for m in members),
                          MappingProxyType({"FAILURE": failed, "SUCCESS": 5 - failed}), 5, 5,
                          failed, "body")
    return graph([node("root", "start"), *members, body],
                 [("root", m.id, "parent") for m in members] +
                 [(m.id, "body", "chord") for m in members],
                 (group,), (WorkflowChord("body", "body", "notify", "g", 0),))


def row_of(drawing: Drawing, y: int) -> str:
    return "".join(span.text for span in drawing.lines[y])


def test_chain_is_one_row_of_boxes_joined_by_arrows() -> None:
    d = layout(chain(), width=200, mode="auto")
    assert d.mode == "graph" and d.height == 3
    middle = row_of(d, 1)
    assert middle.count("▶") == 2 and "├" in middle
    assert "✓ validate" in middle and "✓ reserve" in middle and "✗ charge" in middle
    assert [b.key for b in d.nodes] == ["a", "b", "c"]
    cols = [b.col for b in d.nodes]
    assert cols == sorted(cols) and len(set(cols)) == 3
    for box in d.nodes:  # the drawing has a box where each node says it is
        assert row_of(d, box.row)[box.col] == "┌"
        assert row_of(d, box.row + 2)[box.col + box.width - 1] == "┘"


def test_group_collapses_into_one_stack_node_with_counts() -> None:
    d = layout(chord(failed=1), width=200)
    labels = d.text()
    assert "⧉ charge ×5" in labels and "4✓ 1✗" in labels
    group = next(b for b in d.nodes if b.kind == "group")
    assert group.key == "group:g" and len(group.task_ids) == 5
    assert len(d.nodes) == 3  # start, the stack, the callback
    pending = next(b for b in d.nodes if b.kind == "pending")
    assert pending.state is None
    assert "blocked: 1 failed" in labels  # a failed header never fires the callback


def test_expanded_group_fans_out_and_in_with_junctions() -> None:
    d = layout(chord(failed=0), width=200, expanded={"g"})
    text = d.text()
    assert len(d.nodes) == 7 and text.count("✓ charge") == 5
    assert any(ch in text for ch in "┬┼┤├") and "┘" in text and "┐" in text
    body = next(b for b in d.nodes if b.key == "body")
    assert row_of(d, body.row + 1)[body.col - 1] == "▶"
    assert "waits on" not in text and "… notify" in text


def test_long_edges_pass_through_the_middle_layer() -> None:
    g = graph([node("a", "a"), node("b", "b", parent="a"), node("c", "c", parent="b")],
              [("a", "b", "parent"), ("b", "c", "parent"), ("a", "c", "parent")])
    d = layout(g, width=200)
    c = next(b for b in d.nodes if b.key == "c")
    b = next(b for b in d.nodes if b.key == "b")
    assert c.col > b.col  # longest path: c is after b
    detour = next(y for y in range(3, d.height) if "└" in row_of(d, y))  # under b
    line = row_of(d, detour)
    assert "┘" in line  # and back up into c
    assert "─" * b.width in line[b.col - 2:b.col + b.width + 2]
    assert "┴" not in d.text()  # the detour turns (└ ┘), it does not cross


def test_tree_flattens_chains_and_lists_failed_members_first() -> None:
    d = layout(chain(), mode="tree")
    lines = d.text().splitlines()
    assert lines[1].startswith("├─ ✓ validate") and lines[2].startswith("├─ ✓ reserve")
    assert lines[3].startswith("└─ ✗ charge")
    t = layout(chord(failed=2), mode="tree").text()
    assert "⧉ charge ×5" in t and "✗ charge[0]" in t and "✗ charge[1]" in t
    assert "… 3 more (enter expands)" in t
    assert t.index("⧉ charge") < t.index("✗ charge[0]") < t.index("… notify")


def test_auto_switches_to_tree_when_narrow_or_huge() -> None:
    assert layout(chain(), width=80).mode == "tree"
    many = [node("r", "root")] + [node(f"n{i}", "step", parent="r") for i in range(TREE_ABOVE + 1)]
    big = graph(many, [("r", f"n{i}", "parent") for i in range(TREE_ABOVE + 1)])
    assert layout(big, width=300).mode == "tree"
    assert layout(big, width=300, mode="graph").mode == "graph"


def test_every_state_has_a_glyph() -> None:
    states = ["SUCCESS", "FAILURE", "RETRY", "STARTED", "PENDING", "REVOKED", None]
    nodes = [node(f"s{i}", f"t{i}", s, parent=f"s{i - 1}" if i else None)
             for i, s in enumerate(states)]
    g = graph(nodes, [(f"s{i - 1}", f"s{i}", "parent") for i in range(1, len(states))])
    text = layout(g, width=400).text()
    for glyph in "✓✗⟳▶…⊘":
        assert glyph in text


def test_hostile_names_are_inert_and_cycles_terminate() -> None:
    evil = "\x1b]52;c;ZXZpbA==\x07[bold]x[/]\u202e"
    g = graph([node("a", evil), node("b", "b", parent="a")],
              [("a", "b", "parent"), ("b", "a", "parent")])
    for mode in ("graph", "tree"):
        text = layout(g, width=200, mode=mode).text()  # type: ignore[arg-type]
        assert "\x1b" not in text and "\u202e" not in text and "\\x1b]52" in text


def test_a_graph_folded_from_real_events() -> None:
    state = State(clock=lambda: 100.0)
    events = [
        {"type": "task-sent", "uuid": "a", "root_id": "a", "name": "validate", "timestamp": 1.0},
        {"type": "task-succeeded", "uuid": "a", "runtime": 0.1, "timestamp": 2.0},
        {"type": "task-sent", "uuid": "b", "root_id": "a", "parent_id": "a", "name": "reserve",
         "timestamp": 2.0},
        {"type": "task-started", "uuid": "b", "timestamp": 3.0, "hostname": "w1"},
    ]
    state.events(events)
    g = state.workflow("a")
    assert g is not None
    d = layout(g, width=200)
    assert "✓ validate" in d.text() and "▶ reserve" in d.text() and "▶" in row_of(d, 1)
