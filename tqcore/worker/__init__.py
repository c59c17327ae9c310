"""The worker process: consumer, pools, rate limits."""

from __future__ import annotations

from tqcore.worker.worker import Worker

__all__ = ["Worker"]
