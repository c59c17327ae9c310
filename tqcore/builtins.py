"""Built-in tasks under Celery's names, so canvas messages interoperate."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tqcore.app import App


def register_builtins(app: App) -> None:
    """Register ``celery.map``, ``celery.starmap``, ``celery.chunks`` and ``celery.accumulate``."""
    from tqcore.canvas import signature

    @app.task(name="celery.map")
    def xmap(task: dict[str, Any], it: list[Any]) -> list[Any]:
        fun = signature(task, app=app).type
        return [fun(item) for item in it]

    @app.task(name="celery.starmap")
    def xstarmap(task: dict[str, Any], it: list[Any]) -> list[Any]:
        fun = signature(task, app=app).type
        return [fun(*item) for item in it]

    @app.task(name="celery.chunks")
    def chunks(task: dict[str, Any], it: list[Any], n: int) -> list[Any]:
        fun = signature(task, app=app).type
        return [[fun(*item) for item in it[i:i + n]] for i in range(0, len(it), n)]

    @app.task(name="celery.accumulate")
    def accumulate(*args: Any, **kwargs: Any) -> Any:
        index = kwargs.get("index")
        return args[index] if index is not None else args
