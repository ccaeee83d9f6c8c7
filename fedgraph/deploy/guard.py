"""Run one Flower process so that it is told to stop exactly once: ``python -m fedgraph.deploy.guard CMD...``.

Why this exists: a shop daemon is multi-threaded, and Linux sends a child's ``PR_SET_PDEATHSIG``
signal once for *every* thread of the parent that exits (the child is re-parented to the next
live thread each time). A SuperNode started directly by a daemon that is killed therefore gets
SIGTERM several times in a row. Flower's SuperNode handles the first one gracefully (it tells the
SuperLink it is leaving, so a round in flight fails over to the other shops at once), but its
handler restores the default action first, so the second SIGTERM kills it before it has said so,
and the SuperLink waits for two missed heartbeats (60 s) before the round goes on.

This guard is the SuperNode's parent instead: single-threaded, it turns any number of stop
signals (its own parent-death signal included) into exactly one SIGTERM for the command, waits
for the command to finish, then removes whatever the command left in its process group, and exits
with the command's exit code. The command runs in a session of its own, so a signal sent to the
guard's process group reaches the command only through the guard. If the guard itself is
SIGKILLed, the command still gets one SIGTERM (its parent-death signal, from this one thread).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from fedgraph.runtime.processes import die_with_parent


def main(argv: list[str] | None = None) -> int:
    command = list(sys.argv[1:] if argv is None else argv)
    if not command:
        print("usage: python -m fedgraph.deploy.guard COMMAND [ARG...]", file=sys.stderr)
        return 2
    child = subprocess.Popen(command, start_new_session=True, preexec_fn=die_with_parent(signal.SIGTERM))
    told = False

    def tell_once(_signum: int, _frame: object) -> None:
        nonlocal told
        if not told:
            told = True
            try:
                child.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, tell_once)
    code = child.wait()  # retried after each handler (PEP 475)
    try:  # stragglers the command started in its own group (e.g. a flwr-clientapp)
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
