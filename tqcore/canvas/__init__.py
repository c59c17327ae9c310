"""Signatures and workflow primitives with Celery's names, semantics and dict form.

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

from tqcore.canvas.chain import _chain, chain
from tqcore.canvas.chord import _chord, chord
from tqcore.canvas.group import group
from tqcore.canvas.maps import chunks, xmap, xstarmap
from tqcore.canvas.signature import Signature, maybe_signature, signature, subtask, to_dict, uuid4

__all__ = ["Signature", "_chain", "_chord", "chain", "chord", "chunks", "group", "maybe_signature",
           "signature", "subtask", "to_dict", "uuid4", "xmap", "xstarmap"]
