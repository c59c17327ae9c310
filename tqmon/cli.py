"""The ``tqmon`` command (the dashboard itself is being built; see the README)."""

from __future__ import annotations

import sys


def main() -> None:
    """Entry point: say plainly that the dashboard is not in this release yet."""
    print("tqmon: the dashboard is not part of this release yet; "
          "use `tqcore queues` and `tqcore result` meanwhile", file=sys.stderr)
    sys.exit(1)
