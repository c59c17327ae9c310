"""Making untrusted text inert on a terminal (task names, args, exceptions, hostnames).

Anyone who can publish to the broker controls these strings. :func:`inert` replaces
every C0/C1 control character (ESC, CSI, OSC starters, BEL, CR, backspace), DEL,
bidirectional overrides and zero-width characters with a visible escape such as
``\\x1b`` or ``\\u202e``, and caps the length, so printing the result can neither
move the cursor, retitle the window, write the clipboard, nor disguise itself.
Tabs and newlines are kept only where the caller allows them.
"""

from __future__ import annotations

import re

_BIDI_AND_INVISIBLE = "\u061c\u200b\u200c\u200d\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff"
_UNSAFE = re.compile(f"[\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f{_BIDI_AND_INVISIBLE}]")
_UNSAFE_NO_NEWLINE = re.compile(f"[\\x00-\\x1f\\x7f-\\x9f{_BIDI_AND_INVISIBLE}]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def inert(text: object, *, max_len: int = 10_000, newlines: bool = False) -> str:
    """``text`` as a string safe to print on a terminal.

    Args:
        text: anything; non-strings are ``str()``-ed.
        max_len: longer results are cut with an ellipsis marker.
        newlines: keep ``\\n`` and ``\\t`` (for tracebacks); otherwise they are escaped too.
    """
    s = text if isinstance(text, str) else str(text)
    if len(s) > max_len * 2:
        s = s[: max_len * 2]
    s = (_UNSAFE if newlines else _UNSAFE_NO_NEWLINE).sub(_escape, s)
    if not newlines:
        s = s.replace("\t", "\\t")
    if len(s) > max_len:
        s = s[: max_len - 1] + "…"
    return s
