"""Signatures with Celery's names, semantics and dict form.

A :class:`Signature` *is* a dict (``{task, args, kwargs, options, subtask_type,
immutable}``) because that is Celery's wire form inside a message's embed, and code
written for Celery indexes it. ``subtask_type`` selects the primitive when a dict is
turned back into a signature: ``None`` (a task), ``chain``, ``group``, ``chord``,
``xmap``, ``xstarmap`` and ``chunks``.

As in Celery: partial arguments are *prepended* when a signature is called
(``add.s(2).delay(4)`` runs ``add(4, 2)``); a chain passes each result as the first
argument of the next step unless that step is immutable (``.si()``); a group followed
by a task in a chain becomes a chord.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from tqcore.message import uuid4  # a new task id
from tqcore.message_chain import RawJSONList

if TYPE_CHECKING:
    from tqcore.app import App
    from tqcore.result import ResultBase
    from tqcore.task import Task


class Signature(dict):
    """One task invocation: name, partial args and kwargs, and call options.

    Args:
        task: a task name, a task, or a signature dict to copy.
        args: partial positional arguments.
        kwargs: partial keyword arguments.
        options: ``apply_async`` options (``countdown``, ``queue``, ``link`` ...).
        subtask_type: the primitive (None for a plain task).
        immutable: when True, results of a parent are not passed in.
        app: the app used to resolve the task by name.
        **ex: more options.
    """

    TYPES: ClassVar[dict[str, type[Signature]]] = {}
    _app: App | None
    _type: Task | None

    def __init__(self, task: Any = None, args: Iterable[Any] | None = None,
                 kwargs: dict[str, Any] | None = None, options: dict[str, Any] | None = None,
                 type: Task | None = None, subtask_type: str | None = None,  # noqa: A002
                 immutable: bool = False, app: App | None = None, **ex: Any) -> None:
        self._app = app
        self._type = type
        if isinstance(task, dict):
            super().__init__(task)
            self["args"] = tuple(self.get("args") or ())
            self["kwargs"] = dict(self.get("kwargs") or {})
            self["options"] = dict(self.get("options") or {})
            self._type = getattr(task, "_type", None) or type
            self._app = app or getattr(task, "_app", None)
            return
        if isinstance(task, _task_class()):
            self._type = task
            self._app = app or task.app
            name = task.name
        else:
            name = task
        super().__init__(
            task=name, args=tuple(args or ()), kwargs=dict(kwargs or {}),
            options=dict(options or {}, **ex), subtask_type=subtask_type,
            immutable=immutable)

    @classmethod
    def register_type(cls, name: str | None = None) -> Any:
        """Class decorator: make ``subtask_type == name`` rebuild into the class."""
        def register(sub: type[Signature]) -> type[Signature]:
            cls.TYPES[name or sub.__name__] = sub
            return sub
        return register

    @classmethod
    def from_dict(cls, d: dict[str, Any], app: App | None = None) -> Signature:
        """Rebuild the right primitive from a signature dict (trusted: ours or Celery's)."""
        typ = d.get("subtask_type")
        if typ:
            target = cls.TYPES.get(typ)
            if target is None:
                raise ValueError(f"unknown signature type {typ!r}")
            return target.from_dict(d, app=app)
        return Signature(d, app=app)

    # -- fields -----------------------------------------------------------------
    @property
    def task(self) -> str:
        """The task name."""
        return str(self["task"])

    @property
    def args(self) -> tuple[Any, ...]:
        """Partial positional arguments."""
        return tuple(self["args"])

    @property
    def kwargs(self) -> dict[str, Any]:
        """Partial keyword arguments."""
        return self["kwargs"]

    @property
    def options(self) -> dict[str, Any]:
        """Call options."""
        return self["options"]

    @property
    def subtask_type(self) -> str | None:
        """The primitive's name, None for a task."""
        return self.get("subtask_type")

    @property
    def immutable(self) -> bool:
        """True when parent results are not passed in."""
        return bool(self.get("immutable", False))

    @property
    def id(self) -> str | None:
        """The task id, once frozen."""
        return self.options.get("task_id")

    @property
    def app(self) -> App:
        """The app that resolves this signature's task."""
        if self._app is not None:
            return self._app
        if self._type is not None:
            return self._type.app
        for child in self._children():
            if child._app is not None or child._type is not None:
                return child.app
        from tqcore.app import current_app

        return current_app()

    def _children(self) -> list[Signature]:
        """Signatures nested in this one (members, header, body, mapped task)."""
        kw = self.get("kwargs") or {}
        found: list[Any] = list(kw.get("tasks") or []) + list(kw.get("header") or [])
        for key in ("body", "task"):
            if isinstance(kw.get(key), Signature):
                found.append(kw[key])
        return [c for c in found if isinstance(c, Signature)]

    @property
    def type(self) -> Task:
        """The task object (looked up by name in the app's registry)."""
        if self._type is None:
            self._type = self.app.tasks[self.task]
        return self._type

    # -- building ---------------------------------------------------------------
    def _merge(self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None,
               options: dict[str, Any] | None = None, force: bool = False
               ) -> tuple[tuple[Any, ...], dict[str, Any], dict[str, Any]]:
        # The fields are read as items, not through the properties: this runs for every
        # member of every group sent.
        own_args, own_kwargs, own_options = tuple(self["args"]), self["kwargs"], self["options"]
        new_options = {**own_options, **options} if options else dict(own_options)
        if self.get("immutable", False) and not force:
            return own_args, dict(own_kwargs), new_options
        return (tuple(args) + own_args if args else own_args,
                {**own_kwargs, **kwargs} if kwargs else dict(own_kwargs), new_options)

    def clone(self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None,
              **opts: Any) -> Signature:
        """A copy with ``args`` prepended, ``kwargs`` and ``opts`` merged in."""
        args, kwargs, options = self._merge(args, kwargs, opts)
        options = copy.deepcopy(options) if options else {}
        if type(self) is Signature and not self.get("subtask_type"):
            # What from_dict() would build, without the trip through __init__ (a group
            # clones every member each time it is applied).
            sig = Signature.__new__(Signature)
            dict.update(sig, self, args=args, kwargs=kwargs, options=options)
            sig._app = self._app
        else:
            d = dict(self)
            d.update(args=args, kwargs=kwargs, options=options)
            sig = type(self).from_dict(d, app=self._app)
        sig._type = self._type
        return sig

    partial = clone

    def replace(self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None,
                options: dict[str, Any] | None = None) -> Signature:
        """A copy with args, kwargs or options replaced (not merged)."""
        sig = self.clone()
        if args is not None:
            sig["args"] = tuple(args)
        if kwargs is not None:
            sig["kwargs"] = dict(kwargs)
        if options is not None:
            sig["options"] = dict(options)
        return sig

    def set(self, immutable: bool | None = None, **options: Any) -> Signature:
        """Set call options in place; returns the signature for chaining."""
        if immutable is not None:
            self.set_immutable(immutable)
        self.options.update(options)
        return self

    def set_immutable(self, immutable: bool) -> None:
        """Make the signature (im)mutable."""
        self["immutable"] = immutable

    def link(self, callback: Signature) -> Signature:
        """Apply ``callback`` with this task's result when it succeeds; returns the callback."""
        self.options.setdefault("link", []).append(callback)
        return callback

    def link_error(self, errback: Signature) -> Signature:
        """Apply ``errback`` when this task fails; returns the errback."""
        self.options.setdefault("link_error", []).append(errback)
        return errback

    def on_error(self, errback: Signature) -> Signature:
        """Like :meth:`link_error`, but returns this signature (for chaining)."""
        self.link_error(errback)
        return self

    def flatten_links(self) -> list[Signature]:
        """This signature and every callback linked below it."""
        out: list[Signature] = [self]
        for link in self.options.get("link") or []:
            out.extend(maybe_signature(link, self._app).flatten_links())
        return out

    def freeze(self, _id: str | None = None, group_id: str | None = None,
               chord: Any = None, root_id: str | None = None, parent_id: str | None = None,
               group_index: int | None = None) -> ResultBase:
        """Assign the task id (and workflow ids) now; returns the future result."""
        opts = self["options"]
        if _id is not None:
            opts["task_id"] = _id
        elif "task_id" not in opts or opts["task_id"] is None:
            opts["task_id"] = uuid4()
        if group_id is not None:
            opts["group_id"] = group_id
        if group_index is not None:
            opts["group_index"] = group_index
        if chord is not None:
            opts["chord"] = chord
        if root_id is not None:
            opts["root_id"] = root_id
        if parent_id is not None:
            opts["parent_id"] = parent_id
        return self.app.AsyncResult(opts["task_id"])

    # -- calling ----------------------------------------------------------------
    def apply_async(self, args: Iterable[Any] | None = None,
                    kwargs: dict[str, Any] | None = None, **options: Any) -> ResultBase:
        """Send the task with partial arguments merged; returns its result."""
        if args or kwargs or options:
            args, kwargs, opts = self._merge(args, kwargs, options)
        else:  # nothing to merge: the task's apply_async copies what it keeps
            args, kwargs, opts = self["args"], self["kwargs"], self["options"]
        if self._type is not None or self.task in self.app.tasks:
            return self.type.apply_async(args, kwargs, **opts)
        return self.app.send_task(self.task, args, kwargs, **opts)

    def delay(self, *args: Any, **kwargs: Any) -> ResultBase:
        """Shortcut for ``apply_async(args, kwargs)``."""
        return self.apply_async(args, kwargs)

    def apply(self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None,
              **options: Any) -> ResultBase:
        """Run the task in this process now (eagerly); returns an eager result."""
        args, kwargs, opts = self._merge(args, kwargs, options)
        return self.type.apply(args, kwargs, **opts)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the task function directly in this process with partial args merged."""
        args2, kwargs2, _ = self._merge(args, kwargs, None)
        return self.type(*args2, **kwargs2)

    def __invert__(self) -> Any:
        """``~sig``: apply and wait for the result."""
        return self.apply_async().get()

    def __or__(self, other: Any) -> Signature:
        from tqcore.canvas.chain import _chain

        if isinstance(other, _chain):
            return _chain(self, *other.tasks, app=self._app)
        if isinstance(other, Signature):
            return _chain(self, other, app=self._app)
        return NotImplemented

    def __deepcopy__(self, memo: dict[int, Any]) -> Signature:
        d = copy.deepcopy(dict(self), memo)
        sig = type(self).from_dict(d, app=self._app)
        sig._type = self._type
        return sig

    def __copy__(self) -> Signature:
        return self.clone()

    def __json__(self) -> dict[str, Any]:
        return to_dict(self)

    def __reduce__(self) -> Any:
        return type(self).from_dict, (to_dict(self),)

    def __repr__(self) -> str:
        args = ", ".join([repr(a) for a in self.args] +
                         [f"{k}={v!r}" for k, v in self.kwargs.items()])
        return f"{self.task}({args}){'!' if self.immutable else ''}"

    # dict equality is fine, but signatures must stay hashable for sets of links
    __hash__ = object.__hash__  # type: ignore[assignment]


_TASK_CLASS: list[type[Task]] = []


def _task_class() -> type[Task]:
    """:class:`tqcore.task.Task` (imported on first use: tqcore.task imports this module)."""
    if not _TASK_CLASS:
        from tqcore.task import Task

        _TASK_CLASS.append(Task)
    return _TASK_CLASS[0]


class JSONList(list[Any]):
    """A list known to hold only plain JSON values (decoded from a message, as a chain's
    remaining steps are in a worker): :func:`to_dict` would copy it for nothing, and a
    200-step chain would pay that copy of its whole tail at every step."""


def to_dict(obj: Any) -> Any:
    """A plain JSON-ready copy of a signature (nested signatures included)."""
    if type(obj) is JSONList or type(obj) is RawJSONList:
        return obj
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    return obj


def signature(varies: Any, *args: Any, **kwargs: Any) -> Signature:
    """Celery's ``signature(name_or_dict, args, kwargs, options)`` constructor."""
    app = kwargs.pop("app", None)
    if isinstance(varies, dict):
        if isinstance(varies, Signature):
            return varies.clone()
        return Signature.from_dict(varies, app=app)
    kwargs["app"] = app
    return Signature(varies, *args, **kwargs)


subtask = signature


def first_leaf_id(sigs: list[Signature]) -> str | None:
    """The (frozen) id of the first plain task among ``sigs``: a workflow's root.

    Celery leaves a standalone group's or chord's tasks each their own root; tqcore
    gives them the first task's id, so the whole run is one workflow.
    """
    if not sigs:
        return None
    sig = sigs[0]
    while sig.subtask_type in ("chain", "group", "chord"):
        kids = sig.kwargs.get("tasks") or sig.kwargs.get("header") or []
        if not kids:
            return None
        sig = kids[0]
    if sig.id is None:
        sig.freeze()
    return sig.id


def maybe_signature(d: Any, app: App | None = None) -> Signature:
    """``d`` as a signature (dicts are rebuilt, signatures passed through)."""
    if isinstance(d, Signature):
        if app is not None and d._app is None:
            d._app = app
        return d
    if isinstance(d, dict):
        return Signature.from_dict(d, app=app)
    raise TypeError(f"not a signature: {d!r}")


def _maybe_list(sigs: Any, app: App | None) -> list[Signature]:
    if isinstance(sigs, dict) and not isinstance(sigs, Signature):
        sigs = [sigs]
    if isinstance(sigs, Signature):
        return [sigs]
    return [maybe_signature(s, app) for s in (sigs or [])]


# -- chain ----------------------------------------------------------------------
