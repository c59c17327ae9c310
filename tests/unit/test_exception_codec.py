"""Remote exceptions are rebuilt from an allow-list only (CVE-2021-23727)."""

from __future__ import annotations

from tqcore import App
from tqcore.exception_codec import exception_from_meta, exception_to_meta
from tqcore.exceptions import ChordError, RemoteError


class DeclaredError(Exception):
    pass


def test_builtin_exceptions_come_back_as_themselves() -> None:
    exc = exception_from_meta(exception_to_meta(KeyError("nope")))
    assert isinstance(exc, KeyError) and exc.args == ("nope",)


def test_tqcore_exceptions_come_back_as_themselves() -> None:
    assert isinstance(exception_from_meta(exception_to_meta(ChordError("x"))), ChordError)


def test_a_name_like_os_system_is_never_imported_or_called() -> None:
    meta = {"exc_type": "system", "exc_module": "os", "exc_message": ["touch /tmp/pwned"]}
    exc = exception_from_meta(meta)
    assert isinstance(exc, RemoteError)
    assert exc.exc_type == "system" and "touch" in exc.exc_message


def test_builtin_non_exception_names_are_refused() -> None:
    exc = exception_from_meta({"exc_type": "eval", "exc_module": "builtins",
                               "exc_message": ["1"]})
    assert isinstance(exc, RemoteError)


def test_task_declared_throws_types_are_rebuilt() -> None:
    app = App("exc", broker="memory://exc", set_as_current=False)

    @app.task(name="exc.t", throws=(DeclaredError,))
    def t() -> None:
        raise DeclaredError("boom")

    exc = exception_from_meta(exception_to_meta(DeclaredError("boom")), app, "exc.t")
    assert isinstance(exc, DeclaredError)
    other = exception_from_meta(exception_to_meta(DeclaredError("boom")), app, None)
    assert isinstance(other, RemoteError) and str(other) == "DeclaredError: boom"
