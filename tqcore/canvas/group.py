"""``group``: run tasks in parallel."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from tqcore.app import App
    from tqcore.result import GroupResult

from tqcore.canvas.signature import (
    Signature,
    _maybe_list,
    first_leaf_id,
    maybe_signature,
    uuid4,
)


# -- group ----------------------------------------------------------------------
@Signature.register_type("group")
class group(Signature):  # noqa: N801 - Celery's name
    """Run tasks in parallel; the result is a :class:`~tqcore.result.GroupResult`."""

    def __init__(self, *tasks: Any, **options: Any) -> None:
        app = options.pop("app", None)
        if len(tasks) == 1:
            only = tasks[0]
            if isinstance(only, dict) and not isinstance(only, Signature) and "task" in only:
                tasks = (only,)
            elif not isinstance(only, dict):
                tasks = tuple(only)
        Signature.__init__(self, "celery.group", (),
                           {"tasks": [maybe_signature(t, app) for t in tasks]}, options,
                           subtask_type="group", app=app)

    @classmethod
    def from_dict(cls, d: dict[str, Any], app: App | None = None) -> Signature:
        sig = cls([maybe_signature(t, app) for t in d["kwargs"]["tasks"]], app=app)
        sig.options.update(d.get("options") or {})
        if d.get("immutable"):
            sig.set_immutable(True)
        return sig

    @property
    def tasks(self) -> list[Signature]:
        """The members."""
        return self.kwargs["tasks"]

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[Signature]:
        return iter(self.tasks)

    def __or__(self, other: Any) -> Signature:
        from tqcore.canvas.chain import _chain
        from tqcore.canvas.chord import _chord

        if isinstance(other, Signature) and not isinstance(other, _chain):
            return _chord(self.tasks, other, app=self._app, **self.options)
        return super().__or__(other)

    def clone(self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None,
              **opts: Any) -> Signature:
        sig = group([t.clone(args, kwargs) for t in self.tasks], app=self._app)
        sig.options.update(copy.deepcopy({**self.options, **opts}))
        return sig

    def skew(self, start: float = 1.0, stop: float | None = None,
             step: float = 1.0) -> group:
        """Spread the members' countdowns: ``start``, ``start+step``, ..."""
        it = itertools.count(start, step)
        for task in self.tasks:
            countdown = next(it)
            if stop is not None and countdown > stop:
                countdown = stop
            task.set(countdown=countdown)
        return self

    def freeze(self, _id: str | None = None, group_id: str | None = None, chord: Any = None,
               root_id: str | None = None, parent_id: str | None = None,
               group_index: int | None = None) -> GroupResult:
        from tqcore.result import GroupResult

        gid = _id or group_id or self.options.get("task_id") or uuid4()
        self.options["task_id"] = gid
        root_id = root_id or self.options.get("root_id") or first_leaf_id(self.tasks)
        results = []
        for index, task in enumerate(self.tasks):
            res = task.freeze(group_id=gid, root_id=root_id, parent_id=parent_id,
                              group_index=index)
            results.append(res)
        return GroupResult(gid, results, app=self.app)

    def apply_async(self, args: Iterable[Any] | None = None,
                    kwargs: dict[str, Any] | None = None, **options: Any) -> GroupResult:
        app = self.app
        if app.conf.task_always_eager:
            return self.apply(args, kwargs, **options)
        sig = cast(group, self.clone(args, kwargs))
        opts = {**sig.options, **options}
        gid = opts.pop("task_id", None) or opts.pop("group_id", None)
        opts.pop("group_id", None)
        root_id = opts.pop("root_id", None)
        parent_id = opts.pop("parent_id", None)
        link = opts.pop("link", None)
        link_error = opts.pop("link_error", None)
        opts.pop("chord", None)
        opts.pop("group_index", None)
        result = sig.freeze(gid, root_id=root_id, parent_id=parent_id)
        if link_error:
            for task in sig.tasks:
                for eb in _maybe_list(link_error, app):
                    task.link_error(eb)
        if link:  # Celery links a group callback to every member
            for task in sig.tasks:
                for cb in _maybe_list(link, app):
                    task.link(cb)
        with app.producer_batch():
            for task in sig.tasks:
                task.apply_async(**opts)
        return result

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def apply(self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None,
              **options: Any) -> GroupResult:
        """Run every member eagerly in this process."""
        from tqcore.result import GroupResult

        sig = cast(group, self.clone(args, kwargs))
        gid = sig.options.get("task_id") or uuid4()
        return GroupResult(gid, [t.apply(**options) for t in sig.tasks], app=self.app)

    def __repr__(self) -> str:
        return f"group([{', '.join(repr(t) for t in self.tasks)}])"


# -- chord ----------------------------------------------------------------------
