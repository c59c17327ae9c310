"""Pure view-models for tqmon: no Textual, no I/O.

* :mod:`~tqmon.models.fmt`: ages, durations, rates, glyphs, sparklines, drain ETA.
* :mod:`~tqmon.models.table`: ``Cell``, ``Column``, ``RowVM`` (keyed rows with tones).
* :mod:`~tqmon.models.cluster`: ``Cluster``, the UI thread's data (state, figures, link, tail).
* :mod:`~tqmon.models.rows`: rows of the table views (workers, queues, tasks, failures, flows,
  events).
* :mod:`~tqmon.models.detail`: overview tiles, task detail, worker detail.
* :mod:`~tqmon.models.filtering`: the ``/`` filter (``tqmon.query``, errors as inline messages).
* :mod:`~tqmon.models.keys`: every key binding, for the key bar, help, palette and RO greying.
* :mod:`~tqmon.models.frame`: the header line (connection pill), and the flash line of a result.
"""

from __future__ import annotations

from tqmon.models.cluster import Cluster, TailEvent, redact_url
from tqmon.models.filtering import Filter, FilterError, compile_filter
from tqmon.models.table import Cell, Column, RowVM

__all__ = ["Cell", "Cluster", "Column", "Filter", "FilterError", "RowVM", "TailEvent",
           "compile_filter", "redact_url"]
