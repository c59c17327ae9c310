"""A chain's remaining steps passed on without being encoded again.

A chain step's message carries every step still to run (``embed["chain"]``, the next
one last, as Celery writes it), and the worker sends the next step with the list minus
that step. Encoding the rest again costs each step time in proportion to the chain's
length (a 200-step chain's first message carries about 47 kB of JSON, the largest part of
a step's cost). Yet the rest is already written, in the very text of the body just
decoded: the list's text up to its last element. :class:`MessageChain` keeps that text
beside the decoded list, :meth:`MessageChain.rest` cuts it out, and :func:`body_json`
writes a body around it.

The cut is taken only where it is certain: the text around the list and the list's last
element must be exactly what :func:`tqcore.codec.dumps` writes for them (they are
encoded again and compared, which costs the size of one step, not of the chain). The
rest's text is then the list's own, whatever escapes it uses. A body written another way
(a Celery producer's spacing) has its rest encoded again, as before.
"""

from __future__ import annotations

from typing import Any

from tqcore.codec import dumps

#: The embed's keys, in the order every Celery and tqcore producer writes them.
EMBED_KEYS = ("callbacks", "errbacks", "chain", "chord")


class RawJSONList(list[Any]):
    """A list of plain JSON values with its JSON text (as :func:`dumps` writes it)."""

    __slots__ = ("json",)

    def __init__(self, items: list[Any], json: str) -> None:
        super().__init__(items)
        self.json = json


class MessageChain(list[Any]):
    """A chain's remaining steps as decoded from a message body, with that body's text
    and the other parts of the body (to find the list's text in it)."""

    __slots__ = ("_text", "_args", "_kwargs", "_callbacks", "_errbacks", "_chord")

    def __init__(self, steps: list[Any], text: str | bytes, args: Any, kwargs: Any,
                 embed: dict[str, Any]) -> None:
        super().__init__(steps)
        self._text = text
        self._args, self._kwargs = args, kwargs
        self._callbacks, self._errbacks = embed["callbacks"], embed["errbacks"]
        self._chord = embed["chord"]

    def rest(self) -> RawJSONList | None:
        """These steps without the last one, with their JSON text cut from the body's;
        None when the body was not written as :func:`dumps` writes it (or has changed)."""
        if len(self) < 2:
            return None
        # Bytes that decoded as JSON already passed the strict UTF-8 check.
        text = self._text if isinstance(self._text, str) else self._text.decode("utf-8")
        head = (f'[{dumps(self._args)},{dumps(self._kwargs)},{{"callbacks":'
                f'{dumps(self._callbacks)},"errbacks":{dumps(self._errbacks)},"chain":')
        tail = f',"chord":{dumps(self._chord)}}}]'
        if not (text.startswith(head) and text.endswith(tail)):
            return None
        # The list's text ends with the last step's: [..., {last}]. Its encoding, found
        # right before the closing bracket, starts the part to cut off.
        last = f",{dumps(self[-1])}]"
        end = len(text) - len(tail)
        if not text.endswith(last, len(head), end):
            return None
        return RawJSONList(self[:-1], text[len(head):end - len(last)] + "]")


def wrap(text: str | bytes, args: Any, kwargs: Any, embed: dict[str, Any]) -> None:
    """Make ``embed["chain"]`` a :class:`MessageChain` when it has steps to pass on
    (``text``: the body's JSON text or its UTF-8 bytes, ``[args, kwargs, embed]`` its
    decoded value)."""
    chain = embed.get("chain")
    if type(chain) is list and len(chain) > 1 and tuple(embed) == EMBED_KEYS:
        embed["chain"] = MessageChain(chain, text, args, kwargs, embed)


def body_json(args: Any, kwargs: Any, callbacks: Any, errbacks: Any, chain: RawJSONList,
              chord: Any) -> str:
    """``dumps([args, kwargs, embed])`` with the chain's own text put in as it is."""
    return (f'[{dumps(args)},{dumps(kwargs)},{{"callbacks":{dumps(callbacks)},'
            f'"errbacks":{dumps(errbacks)},"chain":{chain.json},"chord":{dumps(chord)}}}]')
