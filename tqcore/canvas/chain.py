"""``chain``: run tasks one after the other, each result passed to the next."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from tqcore.app import App
    from tqcore.result import ResultBase

from tqcore.canvas.signature import Signature, _maybe_list, maybe_signature, to_dict, uuid4


@Signature.register_type("chain")
class _chain(Signature):  # noqa: N801 - Celery's name
    """Run tasks one after the other, each result passed to the next."""

    def __init__(self, *tasks: Any, **options: Any) -> None:
        app = options.pop("app", None)
        if len(tasks) == 1 and not isinstance(tasks[0], dict) and not isinstance(
                tasks[0], Signature):
            tasks = tuple(tasks[0])  # chain(generator)
        flat: list[Signature] = []
        for t in tasks:
            sig = maybe_signature(t, app)
            if isinstance(sig, _chain) and not sig.options:
                flat.extend(sig.tasks)
            else:
                flat.append(sig)
        Signature.__init__(self, "celery.chain", (), {"tasks": flat}, options,
                           subtask_type="chain", app=app)

    @classmethod
    def from_dict(cls, d: dict[str, Any], app: App | None = None) -> Signature:
        tasks = d["kwargs"]["tasks"]
        sig = cls(*[maybe_signature(t, app) for t in tasks], app=app)
        sig.options.update(d.get("options") or {})
        if d.get("immutable"):
            sig.set_immutable(True)
        return sig

    @property
    def tasks(self) -> list[Signature]:
        """The steps."""
        return self.kwargs["tasks"]

    def __or__(self, other: Any) -> Signature:
        if isinstance(other, _chain):
            return _chain(*self.tasks, *other.tasks, app=self._app)
        if isinstance(other, Signature):
            return _chain(*self.tasks, other, app=self._app)
        return NotImplemented

    def link(self, callback: Signature) -> Signature:
        """Link ``callback`` to the last step (Celery's chain semantics)."""
        if self.tasks:
            return self.tasks[-1].link(callback)
        return super().link(callback)

    def link_error(self, errback: Signature) -> Signature:
        """Link ``errback`` to every step, so a failure anywhere calls it."""
        for task in self.tasks:
            task.link_error(errback.clone() if isinstance(errback, Signature) else errback)
        return errback

    def clone(self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None,
              **opts: Any) -> Signature:
        sig = _chain(*[t.clone() for t in self.tasks], app=self._app)
        sig.options.update(copy.deepcopy({**self.options, **opts}))
        if args or kwargs:
            sig.tasks[0] = sig.tasks[0].clone(args, kwargs)
        return sig

    def prepare_steps(self) -> list[Signature]:
        """The steps normalised: a group followed by more steps becomes a chord,
        and a chord followed by more steps gets them chained after its body."""
        from tqcore.canvas.chord import _chord
        from tqcore.canvas.group import group

        steps = [t.clone() for t in self.tasks]
        out: list[Signature] = []
        i = 0
        while i < len(steps):
            step = steps[i]
            rest = steps[i + 1:]
            if isinstance(step, group) and rest:
                body = rest[0] if len(rest) == 1 else _chain(*rest, app=self._app)
                out.append(_chord(step.tasks, body, app=self._app, **step.options))
                break
            if isinstance(step, _chord) and rest:
                body = _chain(step.body, *rest, app=self._app)
                out.append(_chord(step.tasks, body, app=self._app, **step.options))
                break
            out.append(step)
            i += 1
        return out

    def freeze(self, _id: str | None = None, group_id: str | None = None, chord: Any = None,
               root_id: str | None = None, parent_id: str | None = None,
               group_index: int | None = None) -> ResultBase:
        steps = self.prepare_steps()
        self.kwargs["tasks"] = steps
        return _freeze_chain(steps, _id, group_id, chord, root_id, parent_id, group_index)

    def apply_async(self, args: Iterable[Any] | None = None,
                    kwargs: dict[str, Any] | None = None, **options: Any) -> ResultBase:
        app = self.app
        if app.conf.task_always_eager:
            return self.apply(args, kwargs, **options)
        sig = cast(_chain, self.clone(args, kwargs))
        opts = {**sig.options, **options}
        task_id = opts.pop("task_id", None)
        group_id = opts.pop("group_id", None)
        chord = opts.pop("chord", None)
        group_index = opts.pop("group_index", None)
        root_id = opts.pop("root_id", None)
        parent_id = opts.pop("parent_id", None)
        link = opts.pop("link", None)
        link_error = opts.pop("link_error", None)
        result = sig.freeze(task_id, group_id, chord, root_id, parent_id, group_index)
        steps = sig.tasks
        if not steps:
            return result
        if link:
            for cb in _maybe_list(link, app):
                steps[-1].link(cb)
        if link_error:
            for eb in _maybe_list(link_error, app):
                for step in steps:
                    step.link_error(eb)
        first = steps[0]
        rest = [to_dict(s) for s in reversed(steps[1:])]
        if rest:
            first.options["chain"] = rest
        first.apply_async(**opts)
        return result

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def apply(self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None,
              **options: Any) -> ResultBase:
        """Run every step eagerly in this process."""
        last: ResultBase | None = None
        steps = self.clone(args, kwargs).prepare_steps()  # type: ignore[attr-defined]
        for i, step in enumerate(steps):
            if last is None:
                res = step.apply(**options)
            else:
                res = step.apply((last.get(),) if not step.immutable else None)
            res.parent = last
            last = res
            if i == 0:
                options = {}
        assert last is not None
        return last

    def __repr__(self) -> str:
        return " | ".join(repr(t) for t in self.tasks) or "chain()"


def _attach_parent(result: ResultBase, parent: ResultBase | None) -> None:
    """Hang ``parent`` above the first step of ``result``'s own parent chain."""
    node = result
    seen = set()
    while node.parent is not None and id(node) not in seen:
        seen.add(id(node))
        node = node.parent
    if node is not parent:
        node.parent = parent


def _freeze_chain(steps: list[Signature], _id: str | None, group_id: str | None, chord: Any,
                  root_id: str | None, parent_id: str | None,
                  group_index: int | None) -> ResultBase:
    from tqcore.canvas.chord import _chord
    from tqcore.canvas.group import group

    results: list[ResultBase] = []
    prev_id = parent_id
    for i, step in enumerate(steps):
        last = i == len(steps) - 1
        if root_id is None:
            # the first task is the root of the workflow unless we are inside one
            step.freeze()
            root_id = step.id if not isinstance(step, group | _chord) else (
                step.options.get("task_id") or uuid4())
        res = step.freeze(_id if last else None,
                          group_id=group_id if last else None,
                          chord=chord if last else None,
                          root_id=root_id, parent_id=prev_id,
                          group_index=group_index if last else None)
        if results:
            _attach_parent(res, results[-1])
        results.append(res)
        prev_id = res.id
    return results[-1]


chain = _chain
