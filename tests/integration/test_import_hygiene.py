"""``import tqcore`` (and the worker and CLI modules) must not load heavy optional
drivers or UI libraries: brokers import their driver only when a URL needs it."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.integration.conftest import REPO

FORBIDDEN = ("redis", "pika", "textual", "rich")

_PROBE = """
import json, sys
import tqcore
import tqcore.worker
import tqcore.cli.main
forbidden = {forbidden!r}
loaded = sorted(m for m in sys.modules if m.split(".")[0] in forbidden)
print(json.dumps(loaded))
"""


def test_core_imports_load_no_driver_or_ui_library() -> None:
    proc = subprocess.run([sys.executable, "-c", _PROBE.format(forbidden=FORBIDDEN)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded == [], f"importing tqcore loaded {loaded}"


def test_cli_help_loads_no_driver_or_ui_library() -> None:
    # -X importtime lists every module the process imports, on stderr.
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "tqcore", "--help"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert "tqcore.cli.main" in imported, "importtime output not understood"
    bad = sorted(m for m in imported if m.split(".")[0] in FORBIDDEN)
    assert bad == [], f"`tqcore --help` imported {bad}"
