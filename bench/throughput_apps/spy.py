"""Summaries of py-spy's raw (folded) output for the throughput benchmark's ``--profile``.

Each raw line is ``frame;frame;...;leaf count``, a frame being ``function (file:line)``;
with ``--subprocesses`` the first frame names the process, with ``--threads`` the next
one the thread. Start-up (stacks inside the import machinery) is left out, so the figures
describe the steady state.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

STARTUP_MARKERS = ("_find_and_load", "_bootstrap._gcd_import")


def _is_code(frame: str) -> bool:
    return frame.endswith(")") and " (" in frame and not frame.startswith(("thread ", "process "))


def _role(code: list[str], focus: str) -> str:
    """A thread's name for the report: its outermost project function below the entry
    points (``Worker._consume``, ``Supervisor.run``, ``child_main``...)."""
    for f in code:
        func = f.rpartition(":")[0] + ")"
        if focus in f and func not in ENTRY:
            return func
    return code[-1] if code else "?"


#: Entry points every sample passes through: left out of the inclusive list.
ENTRY = ("<module> (tqcore/__main__.py)", "main (tqcore/cli/main.py)",
         "user_errors.<locals>.wrapper (tqcore/cli/main.py)", "worker (tqcore/cli/worker_cmd.py)",
         "Worker.run (tqcore/worker/worker.py)", "PreforkPool.start (tqcore/worker/prefork.py)",
         "PreforkPool._spawn (tqcore/worker/prefork.py)")


def summarize(path: Path, top: int = 15, focus: str = "tqcore/", wall: bool = False) -> str:
    """Over the samples outside start-up: share per process, self % per leaf frame, % per
    deepest ``focus`` frame (the project line responsible for the time spent below it, in
    libraries or the kernel) and inclusive % per ``focus`` function."""
    if not path.exists() or not path.stat().st_size:
        return f"(py-spy wrote nothing to {path}; see its log beside it)"
    self_c: Counter[str] = Counter()
    deep_c: Counter[str] = Counter()
    func_c: Counter[str] = Counter()
    proc_c: Counter[str] = Counter()
    threads: dict[str, Counter[str]] = {}
    roles: dict[str, Counter[str]] = {}
    total = startup = 0
    for raw in path.read_text(errors="replace").splitlines():
        stack, _, count = raw.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        c = int(count)
        frames = stack.split(";")
        if any(m in f for f in frames for m in STARTUP_MARKERS):
            startup += c
            continue
        total += c
        procs = [f for f in frames if f.startswith("process ")]
        pid = procs[-1].split(":", 1)[0] if procs else "process ?"
        child = "child" if "spawn_main" in stack or "child.py" in stack else "main"
        proc_c[f"{pid} ({child})"] += c
        code = [f for f in frames if _is_code(f)]
        if code:
            self_c[code[-1]] += c
        mine = [f for f in code if focus in f]
        if mine:
            deep_c[mine[-1]] += c
        tid = next((f for f in frames if f.startswith("thread ")), None)
        if tid is not None:
            key = f"{pid} {tid}"
            threads.setdefault(key, Counter())[mine[-1] if mine else code[-1] if code else "?"] += c
            roles.setdefault(key, Counter())[_role(code, focus)] += c
        for f in {fr.rpartition(":")[0] + ")" for fr in mine} - set(ENTRY):
            func_c[f] += c
    if not total:
        return f"(no samples outside start-up; {startup} in start-up)"
    pct = 100.0 / total
    kind = ("wall-clock samples (py-spy --idle: waiting threads included)" if wall
            else "non-idle samples (py-spy's heuristic: some blocking reads count)")
    out = [f"{total} {kind} outside start-up (+{startup} in start-up, left out)",
           "  per process: " + ", ".join(f"{p} {c * pct:.0f}%" for p, c in proc_c.most_common()),
           "  self%  leaf frame (function (file:line))"]
    out += [f"  {c * pct:5.1f}  {f}" for f, c in self_c.most_common(top)]
    out.append(f"      %  deepest {focus} frame on the stack (file:line)")
    out += [f"  {c * pct:5.1f}  {f}" for f, c in deep_c.most_common(top)]
    out.append(f"  incl%  {focus} function (entry points left out)")
    out += [f"  {c * pct:5.1f}  {f}" for f, c in func_c.most_common(top)]
    if threads:
        out.append("  per thread (share of that thread's samples, by deepest frame):")
        busiest = sorted(threads, key=lambda k: -sum(threads[k].values()))
        for key in busiest[:8]:
            n = sum(threads[key].values())
            role = roles[key].most_common(1)[0][0]
            out.append(f"    {role} [{key.split(' ', 1)[1]}], {n} samples:")
            out += [f"      {100 * c / n:5.1f}  {f}" for f, c in threads[key].most_common(5)]
    return "\n".join(out)
