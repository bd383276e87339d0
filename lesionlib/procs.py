"""Child processes that die with the process that started them (issue #24: no orphan after a killed job).

A long stage run as a subprocess (nnU-Net's planning, training and prediction: :meth:`lesionlib.nnunet.pipeline.
NnUNetRun._run`) must not outlive the cell that started it. The cell's code runs in a notebook kernel, which
Jupyter starts in a session of its own and which ends itself (``os._exit``) when its parent, the papermill runner,
is gone; a stage started with ``start_new_session=True`` then lived on under PID 1 (after SIGTERM to a local
Snakemake, ``lesionlib.nnunet.predict_worker`` kept computing for ten minutes; on a GPU host it holds the GPU).
SLURM's ``proctrack/linuxproc`` finds a job's processes through their parents, so an orphan escapes ``scancel``
and the time limit too.

So such a stage runs under a small guard, ``python -I lesionlib/procs.py --parent PID -- CMD ...``
(:func:`guarded_command`), which

* asks the kernel for SIGTERM when the thread that started it ends (``prctl(PR_SET_PDEATHSIG)``, Linux; the
  starting thread waits for the guard, so that is the process' end), and exits at once if that parent is
  already gone;
* starts the command in a process group of its own, asking the kernel to SIGKILL it should the guard itself
  be killed;
* on SIGTERM, SIGINT or SIGHUP stops that whole group (the command and every worker it forked): SIGTERM,
  ``grace_s`` seconds, then SIGKILL, and exits with 128 + the signal's number;
* when the command ends, kills what is left of its group (workers it did not reap), then exits with the
  command's status (128 + N when signal N ended it).

The guard imports the standard library only and runs isolated (``-I``), so it starts in milliseconds and
whatever the clone or ``PYTHONPATH``. Elsewhere than Linux it runs the command the same way, without the
death signal.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

log = logging.getLogger(__name__)

#: ``prctl`` option that asks for a signal when the parent (the thread that forked us) ends (linux/prctl.h).
PR_SET_PDEATHSIG = 1
#: Seconds between SIGTERM and SIGKILL when the guard stops a command's process group.
DEFAULT_GRACE_S = 5.0
#: Signals on which the guard stops the command's group, then exits.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

_prctl = None


def _load_prctl():
    """libc's ``prctl``, or ``None`` off Linux (loaded once, before any fork that uses it)."""
    global _prctl
    if _prctl is None and sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _prctl = libc.prctl
        _prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        _prctl.restype = ctypes.c_int
    return _prctl


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent thread ends (Linux ``PR_SET_PDEATHSIG``).

    Returns ``False`` where the platform has no such call. The setting survives ``exec`` and is cleared in
    forked children.
    """
    prctl = _load_prctl()
    if prctl is None:
        return False
    if prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG, {int(sig)}) failed: {os.strerror(err)}")
    return True


def guarded_command(cmd: Sequence[str | os.PathLike], *, grace_s: float = DEFAULT_GRACE_S) -> list[str]:
    """The command line that runs ``cmd`` under the guard, tied to this process (see the module's docstring).

    The caller starts it (``subprocess.Popen``) from the thread that waits for it.
    """
    if not cmd:
        raise ValueError("guarded_command: empty command")
    return [sys.executable, "-I", str(Path(__file__).resolve()), "--parent", str(os.getpid()),
            "--grace", str(float(grace_s)), "--", *(str(c) for c in cmd)]


class _Stop(Exception):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_stop(signum: int, _frame) -> None:
    raise _Stop(signum)


def _command_setup() -> None:
    """``preexec_fn`` of the command (the guard is single-threaded, so this is safe): SIGKILL when the guard
    dies, and the stop signals, blocked in the guard while it starts the command, unblocked."""
    if _load_prctl() is not None:
        set_parent_death_signal(signal.SIGKILL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def stop_group(pgid: int, proc: subprocess.Popen | None = None, grace_s: float = DEFAULT_GRACE_S) -> None:
    """SIGTERM process group ``pgid``; after ``grace_s`` seconds SIGKILL what is left of it.

    ``proc`` (the group's leader, a child of this process) is reaped on the way.
    """
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if proc is not None:
            proc.poll()
        if not _group_alive(pgid):
            return
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if proc is not None:
        proc.wait()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _exit_status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def run_guard(cmd: Sequence[str], *, parent: int, grace_s: float = DEFAULT_GRACE_S) -> int:
    """The guard's body: run ``cmd`` tied to process ``parent`` (this process' parent); returns the exit status."""
    set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != parent:  # the parent ended before the death signal was armed
        log.warning("guard: parent %d is gone before %s started", parent, cmd[0])
        return 128 + signal.SIGTERM
    for sig in STOP_SIGNALS:
        signal.signal(sig, _raise_stop)
    proc = None
    # a stop signal that comes while the command is being started waits until it has started (then stops it)
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        try:
            proc = subprocess.Popen(list(cmd), start_new_session=True, preexec_fn=_command_setup)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        returncode = proc.wait()
    except _Stop as stop:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        if proc is not None:
            log.warning("guard: signal %d: stopping %s (process group %d)", stop.signum, cmd[0], proc.pid)
            stop_group(proc.pid, proc, grace_s)
        return 128 + stop.signum
    if _group_alive(proc.pid):  # workers the command left behind
        log.warning("guard: %s exited with %d and left processes in its group %d: killing them",
                    cmd[0], returncode, proc.pid)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return _exit_status(returncode)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -I procs.py --parent PID [--grace S] -- CMD ...``"""
    parser = argparse.ArgumentParser(prog="procs.py", description=__doc__.splitlines()[0])
    parser.add_argument("--parent", type=int, required=True, help="PID of the process the command is tied to")
    parser.add_argument("--grace", type=float, default=DEFAULT_GRACE_S, help="seconds between SIGTERM and SIGKILL")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="-- the command and its arguments")
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("no command given after --")
    logging.basicConfig(level=logging.INFO, format="[lesionlib.procs] %(message)s")
    return run_guard(cmd, parent=args.parent, grace_s=args.grace)


if __name__ == "__main__":
    sys.exit(main())
