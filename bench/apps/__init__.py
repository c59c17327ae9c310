"""App modules the benchmark's workers import (``-A bench.apps.tq`` / ``-A bench.apps.cel``)."""
