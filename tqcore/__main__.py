"""``python -m tqcore``: the same as the ``tqcore`` command."""

from tqcore.cli.main import main

main()
