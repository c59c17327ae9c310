"""The example project the acceptance suite's worker runs (``-A tests.acceptance.proj.tasks``)."""
