"""``chord``: a group whose results, as a list, are passed to a body task."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from tqcore.app import App
    from tqcore.result import ResultBase

from tqcore.canvas.chain import _attach_parent, _chain
from tqcore.canvas.group import group
from tqcore.canvas.signature import (
    Signature,
    _maybe_list,
    first_leaf_id,
    maybe_signature,
    to_dict,
    uuid4,
)


@Signature.register_type("chord")
class _chord(Signature):  # noqa: N801 - Celery's name
    """A group (the header) whose results are passed, as a list, to the body."""

    def __init__(self, header: Any, body: Any = None, task: str = "celery.chord",
                 args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None,
                 app: App | None = None, **options: Any) -> None:
        if isinstance(header, group):
            options = {**header.options, **options}
            header = header.tasks
        elif not isinstance(header, list | tuple):
            header = list(header)
        Signature.__init__(self, task, args or (), {
            "kwargs": dict(kwargs or {}),
            "header": [maybe_signature(t, app) for t in header],
            "body": maybe_signature(body, app) if body is not None else None,
        }, options, subtask_type="chord", app=app)

    @classmethod
    def from_dict(cls, d: dict[str, Any], app: App | None = None) -> Signature:
        kw = d["kwargs"]
        header = kw["header"]
        if isinstance(header, dict) and header.get("subtask_type") == "group":
            header = header["kwargs"]["tasks"]
        sig = cls([maybe_signature(t, app) for t in header],
                  maybe_signature(kw["body"], app) if kw.get("body") else None,
                  args=d.get("args"), kwargs=kw.get("kwargs"), app=app)
        sig.options.update(d.get("options") or {})
        return sig

    @property
    def tasks(self) -> list[Signature]:
        """The header tasks."""
        return self.kwargs["header"]

    @property
    def body(self) -> Signature:
        """The callback receiving the header results."""
        return self.kwargs["body"]

    def clone(self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None,
              **opts: Any) -> Signature:
        sig = _chord([t.clone(args, kwargs) for t in self.tasks],
                     self.body.clone() if self.body is not None else None, app=self._app)
        sig.options.update(copy.deepcopy({**self.options, **opts}))
        return sig

    def link(self, callback: Signature) -> Signature:
        self.body.link(callback)
        return callback

    def link_error(self, errback: Signature) -> Signature:
        self.body.link_error(errback)
        return errback

    def freeze(self, _id: str | None = None, group_id: str | None = None, chord: Any = None,
               root_id: str | None = None, parent_id: str | None = None,
               group_index: int | None = None) -> ResultBase:
        from tqcore.result import GroupResult

        gid = self.options.get("group_id") or self.options.get("task_id_header") or uuid4()
        self.options["group_id"] = gid
        members = _chord_members(self.tasks, self._app)
        self.kwargs["header"] = members
        root_id = root_id or self.options.get("root_id") or first_leaf_id(members)
        body_res = self.body.freeze(_id, group_id=group_id, chord=chord, root_id=root_id,
                                    group_index=group_index)
        header_results = [m.freeze(group_id=gid, root_id=root_id, parent_id=parent_id,
                                   group_index=i) for i, m in enumerate(members)]
        _attach_parent(body_res, GroupResult(gid, header_results, app=self.app))
        self.options["task_id"] = body_res.id
        return body_res

    def __call__(self, body: Any = None, **options: Any) -> ResultBase:
        if body is not None:
            self.kwargs["body"] = maybe_signature(body, self._app)
        return self.apply_async((), **options)

    def apply_async(self, args: Iterable[Any] | None = None,
                    kwargs: dict[str, Any] | None = None, **options: Any) -> ResultBase:
        app = self.app
        if self.body is None:
            raise ValueError("chord has no body: use chord(header)(body) or chord(header, body)")
        if app.conf.task_always_eager:
            return self.apply(args, kwargs, **options)
        sig = cast(_chord, self.clone(args, kwargs))
        opts = {**sig.options, **options}
        result = sig.freeze(opts.pop("task_id", None), opts.pop("group_id_outer", None),
                            opts.pop("chord", None), opts.pop("root_id", None),
                            opts.pop("parent_id", None), opts.pop("group_index", None))
        for key in ("group_id", "link", "link_error"):
            if key in opts:
                value = opts.pop(key)
                if key == "link":
                    for cb in _maybe_list(value, app):
                        sig.body.link(cb)
                elif key == "link_error":
                    for eb in _maybe_list(value, app):
                        sig.body.link_error(eb)
        members = sig.tasks
        body = to_dict(sig.body)
        body["chord_size"] = len(members)
        if not members:  # an empty header calls the body at once with []
            sig.body.apply_async(([],))
            return result
        gid = sig.options["group_id"]
        with app.producer_batch():
            for i, member in enumerate(members):
                _reporter(member).set(chord=body, group_id=gid, group_index=i)
                member.apply_async(**opts)
        return result

    def apply(self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None,
              **options: Any) -> ResultBase:
        """Run the header, then the body, eagerly in this process."""
        sig = cast(_chord, self.clone(args, kwargs))
        header = group(sig.tasks, app=self._app).apply(**options)
        return sig.body.apply((header.get(),))

    def __repr__(self) -> str:
        return f"chord([{', '.join(repr(t) for t in self.tasks)}], {self.body!r})"


def _chord_members(tasks: list[Signature], app: App | None) -> list[Signature]:
    """Header members with nested groups flattened (each leaf reports to the chord)."""
    out: list[Signature] = []
    for t in tasks:
        if isinstance(t, group):
            out.extend(_chord_members(t.tasks, app))
        else:
            out.append(t)
    return out


def _reporter(sig: Signature) -> Signature:
    """The task whose completion stands for ``sig``'s result (last step, chord body)."""
    if isinstance(sig, _chain):
        return _reporter(sig.tasks[-1])
    if isinstance(sig, _chord):
        return _reporter(sig.body)
    return sig


chord = _chord
