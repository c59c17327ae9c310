"""Broker and backend URLs: parsing, defaults and credential redaction."""

from __future__ import annotations

import os
import re
import urllib.parse
from pathlib import Path

from tqcore.exceptions import ImproperlyConfigured

_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:@/]*):[^@/]*@")


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe to log and display)."""
    return _CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)


def default_db_path() -> Path:
    """Where the embedded SQLite file lives when nothing is configured.

    ``$TQ_HOME/tqcore.db`` if ``TQ_HOME`` is set, else ``$XDG_DATA_HOME/tqcore/tqcore.db``
    (``~/.local/share/tqcore/tqcore.db``), so a producer and a worker started from
    different directories still meet.
    """
    home = os.environ.get("TQ_HOME")
    if home:
        return Path(home) / "tqcore.db"
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "tqcore" / "tqcore.db"


def default_url() -> str:
    """The embedded default URL, ``sqlite:////abs/path/tqcore.db``."""
    return "sqlite:///" + str(default_db_path())


def scheme_of(url: str) -> str:
    """The lower-cased scheme of ``url``, or raise a one-line configuration error."""
    if not isinstance(url, str) or "://" not in url:
        raise ImproperlyConfigured(f"not a URL: {redact(str(url))!r} (expected e.g. sqlite:///tq.db)")
    return url.split("://", 1)[0].lower()


def sqlite_path(url: str) -> Path:
    """The file path of a ``sqlite://`` URL, following SQLAlchemy's convention.

    ``sqlite:///rel/tq.db`` is relative to the working directory and
    ``sqlite:////abs/tq.db`` is absolute; ``sqlite://`` alone means the default file.
    """
    if scheme_of(url) != "sqlite":
        raise ImproperlyConfigured(f"not a sqlite URL: {redact(url)!r}")
    rest = url.split("://", 1)[1]
    if rest in ("", "/"):
        return default_db_path()
    if not rest.startswith("/"):
        raise ImproperlyConfigured(
            f"bad sqlite URL {url!r}: use sqlite:///relative.db or sqlite:////absolute.db")
    path = urllib.parse.unquote(rest[1:].split("?", 1)[0])
    if not path or path == ":memory:":
        raise ImproperlyConfigured(
            f"bad sqlite URL {url!r}: the embedded broker needs a file shared by processes")
    return Path(path)
