"""The ``tqcore`` command line."""
