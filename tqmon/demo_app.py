"""The tqcore app behind ``tqmon demo``: a small shop's background jobs, some of them unwell.

Worker processes run it as a user would run theirs::

    TQ_BROKER_URL=sqlite:////tmp/tqmon-demo-x/demo.db \\
        python -m tqcore -A tqmon.demo_app worker -P prefork -c 2 -n demo1@%h -Q celery,emails,media

``App("demo")`` is given no URL: the broker and result store come from ``TQ_BROKER_URL``
(``tqmon demo`` sets it for every process it starts). The tasks are fake but shaped like real
ones, so every tqmon view has something to show:

===================== ============================================================
``demo.charge``       billing; declines some cards (``CardDeclined``)
``demo.send_email``   rate-limited per worker (``emails`` queue)
``demo.resize_image`` slow (``media`` queue); long ones get terminated by the workload
``demo.validate``     first step of an order; rejects a few orders (``ValueError``)
``demo.reserve``      second step of the order chain
``demo.notify``       chord body: runs once every ``validate`` of a batch is done
``demo.fetch_rates``  retries twice on a connection reset, then succeeds
``demo.build_report`` flaky: times out waiting for a database connection
===================== ============================================================
"""

from __future__ import annotations

import random
import time
from typing import Any

from tqcore import App

app = App("demo")
app.conf.task_routes = {
    "demo.send_email": {"queue": "emails"},
    "demo.resize_image": {"queue": "media"},
}
app.conf.result_expires = 3600

#: Queues the demo workers consume.
QUEUES = ("celery", "emails", "media")


class CardDeclined(Exception):
    """The payment provider declined the card."""


class DatabaseTimeout(Exception):
    """No database connection became free in time (an ``OperationalError`` look-alike)."""


def _work(low: float, high: float) -> None:
    time.sleep(random.uniform(low, high))


@app.task(name="demo.charge")
def charge(order_id: str, amount_cents: int, card: str = "visa-4242") -> dict[str, Any]:
    """Charge an order; about one card in seven is declined."""
    _work(0.05, 0.4)
    if random.random() < 0.15:
        raise CardDeclined(f"card {card} declined for order {order_id} (code 51: insufficient"
                           " funds)")
    return {"order_id": order_id, "charged": amount_cents, "status": "captured"}


@app.task(name="demo.send_email", rate_limit="20/m")
def send_email(to: str, template: str = "receipt") -> str:
    """Send a transactional email (rate-limited, as providers insist)."""
    _work(0.02, 0.15)
    return f"sent {template} to {to}"


@app.task(name="demo.resize_image")
def resize_image(image_id: int, seconds: float | None = None) -> dict[str, Any]:
    """Resize an upload: slow, and sometimes very slow."""
    time.sleep(seconds if seconds is not None else random.uniform(0.8, 3.0))
    return {"image_id": image_id, "sizes": [64, 256, 1024]}


@app.task(name="demo.validate")
def validate(order_id: str) -> dict[str, Any]:
    """Check an order; one in twenty has no lines."""
    _work(0.02, 0.2)
    if random.random() < 0.05:
        raise ValueError(f"order {order_id} has no lines")
    return {"order_id": order_id, "lines": random.randint(1, 5)}


@app.task(name="demo.reserve")
def reserve(order: dict[str, Any]) -> dict[str, Any]:
    """Reserve stock for a validated order (chain step two)."""
    _work(0.05, 0.3)
    return {**order, "reserved": True}


@app.task(name="demo.notify")
def notify(results: list[Any], channel: str = "#orders") -> str:
    """Post a summary of a batch to a chat channel (the chord body)."""
    _work(0.02, 0.1)
    return f"posted {len(results)} result(s) to {channel}"


@app.task(name="demo.fetch_rates", bind=True, max_retries=5)
def fetch_rates(self: Any, currency: str = "EUR") -> dict[str, Any]:
    """Fetch exchange rates; the upstream resets the first two connections."""
    _work(0.05, 0.2)
    if (self.request.retries or 0) < 2:
        raise self.retry(exc=ConnectionResetError("rates API reset the connection"),
                         countdown=1)
    return {"currency": currency, "rate": round(random.uniform(0.9, 1.1), 4)}


@app.task(name="demo.build_report")
def build_report(report: str, account_id: int) -> str:
    """Build a report; the reporting database's pool is too small."""
    _work(0.1, 0.6)
    if random.random() < 0.35:
        raise DatabaseTimeout(f"could not obtain a connection from pool 'reports' within 5.0s"
                              f" (host db-{account_id % 7}, pool size 20)")
    return f"{report} for account {account_id}"
