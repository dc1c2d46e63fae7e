"""What a submitted job's process group starts with: run the job's command, note how it ended.

The ``jobs`` actor (:mod:`actorflow.jobs.manager`) runs, as the leader of the job's new
session, ``python -I -S <this file> EXIT_FILE -- COMMAND...`` (by path, so that it imports
nothing of actorflow nor of the site: it starts as fast as the interpreter does). It runs
COMMAND as its child in the same process group, waits for it, writes its exit status to
EXIT_FILE (atomically: the decimal code, negative for a signal, as ``subprocess`` gives it) and
ends the same way (the same code, or killed by the same signal). So a head started again after
its process died, while the job ran on, learns how the job ended even though the job's process
was not its child: it waits for this process's end (a pidfd) and reads the file.

Signals sent to the group (``actorflow job stop``: SIGTERM, then SIGKILL) reach COMMAND
directly; this process waits through SIGTERM, SIGINT and SIGHUP for its child to end. A SIGKILL
of the group ends it too, and then no file is written.

``wrapper.py - --die-with-parent -- COMMAND...`` (how a job's entrypoint placed on a node by
its resources runs, under the actor that hosts it: :mod:`actorflow.cli.job_runner`) writes no
file, and when its parent process dies (Linux: ``PR_SET_PDEATHSIG``) it SIGKILLs its whole
process group, COMMAND and everything it started, so nothing of the job outlives its host.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

__all__ = ["main", "write_exit"]


def write_exit(path: str, code: int) -> None:
    if path == "-":
        return
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(str(code))
    os.replace(tmp, path)


def _wait_through(_signum: int, _frame: object) -> None:
    """The group's signal reached the child too: wait for its end."""


def _end_group(_signum: int, _frame: object) -> None:
    """The parent died: the whole group goes (this process with it)."""
    os.killpg(0, signal.SIGKILL)


def _die_with_parent() -> None:
    import ctypes

    parent = os.getppid()
    signal.signal(signal.SIGUSR1, _end_group)
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGUSR1)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the request was made
        _end_group(signal.SIGUSR1, None)


def main(argv: list[str]) -> int:
    args = argv[1:]
    die_with_parent = len(args) > 1 and args[1] == "--die-with-parent"
    if die_with_parent:
        del args[1]
    if len(args) < 3 or args[1] != "--":
        print("usage: wrapper.py EXIT_FILE|- [--die-with-parent] -- COMMAND...",
              file=sys.stderr)
        return 2
    exit_file, command = args[0], args[2:]
    if die_with_parent and sys.platform.startswith("linux"):
        _die_with_parent()
    try:
        child = subprocess.Popen(command)
    except OSError as exc:
        print(f"the job could not start: {exc}", file=sys.stderr)
        write_exit(exit_file, 127)
        return 127
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _wait_through)
    code = child.wait()
    write_exit(exit_file, code)
    if code < 0:  # end as the child did: killed by the same signal
        sys.stdout.flush()
        if -code != signal.SIGKILL:
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        return 128 - code  # (a signal whose default is not to end the process)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
