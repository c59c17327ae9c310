"""tqmon's widgets: the frame (header, crumbs, flash line, key bar), the virtual table, the
sparkline and the workflow graph canvas. Widgets never import tqcore's I/O or the app; they draw
view-models from :mod:`tqmon.models`."""

from __future__ import annotations

from tqmon.widgets.crumbs import Crumbs
from tqmon.widgets.flash import FlashLine
from tqmon.widgets.graph_canvas import GraphCanvas
from tqmon.widgets.header import FrameHeader
from tqmon.widgets.keybar import KeyBar
from tqmon.widgets.sparkline import Spark
from tqmon.widgets.toned import Toned
from tqmon.widgets.vtable import VirtualTable

__all__ = ["Crumbs", "FlashLine", "FrameHeader", "GraphCanvas", "KeyBar", "Spark", "Toned",
           "VirtualTable"]
