"""``xmap``, ``xstarmap`` and ``chunks``: one task over many items."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from tqcore.app import App
    from tqcore.result import GroupResult, ResultBase

from tqcore.canvas.group import group
from tqcore.canvas.signature import Signature, maybe_signature, to_dict


# -- map, starmap, chunks -------------------------------------------------------
class _basemap(Signature):  # noqa: N801
    _task_name: ClassVar[str] = ""
    _type_name: ClassVar[str] = ""

    def __init__(self, task: Any, it: Iterable[Any], **options: Any) -> None:
        app = options.pop("app", None)
        Signature.__init__(self, self._task_name, (),
                           {"task": maybe_signature(task, app), "it": [list(x) if isinstance(
                               x, tuple | range) else x for x in it]},
                           options, subtask_type=self._type_name, immutable=True, app=app)

    @classmethod
    def from_dict(cls, d: dict[str, Any], app: App | None = None) -> Signature:
        sig = cls(d["kwargs"]["task"], d["kwargs"]["it"], app=app)
        sig.options.update(d.get("options") or {})
        return sig

    def apply_async(self, args: Iterable[Any] | None = None,
                    kwargs: dict[str, Any] | None = None, **options: Any) -> ResultBase:
        opts = {**self.options, **options}
        return self.app.tasks[self._task_name].apply_async(
            (), {"task": to_dict(self.kwargs["task"]), "it": self.kwargs["it"]}, **opts)

    def apply(self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None,
              **options: Any) -> ResultBase:
        return self.app.tasks[self._task_name].apply(
            (), {"task": to_dict(self.kwargs["task"]), "it": self.kwargs["it"]}, **options)


@Signature.register_type("xmap")
class xmap(_basemap):  # noqa: N801
    """One task calling ``task(item)`` for each item (``task.map(it)``)."""

    _task_name = "celery.map"
    _type_name = "xmap"


@Signature.register_type("xstarmap")
class xstarmap(_basemap):  # noqa: N801
    """One task calling ``task(*item)`` for each item (``task.starmap(it)``)."""

    _task_name = "celery.starmap"
    _type_name = "xstarmap"


@Signature.register_type("chunks")
class chunks(Signature):  # noqa: N801
    """Split ``it`` into chunks of ``n``, each run as one starmap task."""

    def __init__(self, task: Any, it: Iterable[Any], n: int, **options: Any) -> None:
        app = options.pop("app", None)
        Signature.__init__(self, "celery.chunks", (),
                           {"task": maybe_signature(task, app),
                            "it": [list(x) if isinstance(x, tuple) else x for x in it],
                            "n": int(n)},
                           options, subtask_type="chunks", immutable=True, app=app)

    @classmethod
    def from_dict(cls, d: dict[str, Any], app: App | None = None) -> Signature:
        kw = d["kwargs"]
        sig = cls(kw["task"], kw["it"], kw["n"], app=app)
        sig.options.update(d.get("options") or {})
        return sig

    def group(self) -> group:
        """The chunks as a group of starmap tasks."""
        task = maybe_signature(self.kwargs["task"], self._app)
        it, n = self.kwargs["it"], self.kwargs["n"]
        parts = [it[i:i + n] for i in range(0, len(it), n)]
        return group([xstarmap(task, part, app=self._app) for part in parts], app=self._app,
                     **self.options)

    def apply_async(self, args: Iterable[Any] | None = None,
                    kwargs: dict[str, Any] | None = None, **options: Any) -> GroupResult:
        return self.group().apply_async(args, kwargs, **options)

    def __call__(self, **options: Any) -> GroupResult:
        return self.apply_async(**options)

    def apply(self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None,
              **options: Any) -> GroupResult:
        return self.group().apply(args, kwargs, **options)
