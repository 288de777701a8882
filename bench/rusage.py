"""Run one command and report its own peak RSS and CPU time, from a small process.

    python bench/rusage.py REPORT -- COMMAND [ARG...]

Why a process in between: Linux keeps a process's peak RSS (``ru_maxrss``) across ``exec``, and
a child that ``subprocess`` starts (with ``vfork``, or ``fork``) begins as the parent: so a
command started by the benchmark reports at least the benchmark's own peak, which grows part
after part (121 MB in a whole run, against the command's own 51). Forked from this small
process instead, the command's figure holds this process's few MB at most, as it would from a
shell. The figures go to the file REPORT as JSON (``wall_s``, ``cpu_s``, ``peak_rss_mb``); the
exit status is the command's.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    report, command = argv[0], argv[2:]
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child execs at once)
        try:
            os.execvp(command[0], command)  # noqa: S606 (the benchmark's own command line)
        except OSError as exc:
            os.write(2, f"bench/rusage.py: cannot run {command[0]}: {exc.strerror}\n".encode())
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    figures = {
        "wall_s": time.perf_counter() - start,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,  # Linux reports kilobytes
    }
    with open(report, "w", encoding="utf-8") as f:
        json.dump(figures, f)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
