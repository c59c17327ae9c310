"""``python -m tqmon``: the same as the ``tqmon`` command."""

from tqmon.cli import main

main()
