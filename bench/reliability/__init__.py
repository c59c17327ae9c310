"""Reliability fault suite for tqcore (reliability.md §4): the embedded SQLite broker,
and private Redis and RabbitMQ servers for the broker-fault rows.

Modules, one concern each:

* :mod:`.app` — the tqcore app the worker processes run; every task writes the
  ledger itself (:mod:`.ledger`), independent of what tqcore says about itself;
* :mod:`.ledger` — writing and reading the ledger; lost / duplicate / phantom analysis;
* :mod:`.chaos` — a cluster of real worker processes with a seeded chaos driver that
  logs every injected fault and tears down every process it started, by pid;
* :mod:`.brokers` — private redis-server / RabbitMQ nodes on free loopback ports:
  kill -9, restart on the same port and directory, SIGSTOP/SIGCONT, ``ss -K``;
* :mod:`.crash`, :mod:`.flow`, :mod:`.workflow` (SQLite) and :mod:`.broker_faults`,
  :mod:`.broker_poison` (Redis, RabbitMQ) — the scenarios (R1 … R23), each
  registered with its broker and its CI and soak sizes in :mod:`.suite`, which runs
  one in a fresh directory, cluster and (for a server broker) server;
* :mod:`.procs` — helper processes (producers, a ``queue_stats`` reader) for R16;
* :mod:`.report` — one Markdown row / JSON object per scenario.

The "recovery p50/p99" column holds per-event durations whose meaning each
scenario names in the cell: kill → re-run (R1, R1b, R16), kill → pool refilled (R2),
enqueue → dead-letter (R3), SIGTERM → prefetched ready again (R4), lateness of ETA
starts (R13), chord sent → body done (R17), revoke → target process gone (R18),
no-op enqueue → start (R20); broker up → claims resume (R5-R7, R10), storm end →
backlog done (R9), maxmemory lifted → publish ok (R11), its turn → dead letter (R12).

Run ``python -m bench.reliability --tier ci`` (or ``soak``; ``--broker redis`` for one
broker's rows); the CI tier also runs under pytest in
``tests/reliability/test_fault_suite.py`` (SQLite) and ``test_broker_faults.py``.
"""
