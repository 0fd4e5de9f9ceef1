"""Stop requests from signals, honoured where stopping loses nothing.

A scheduler asks a job to stop with a signal (SLURM: USR2 before the time limit, SIGTERM on
preemption or at the limit), a user with Ctrl-C (SIGINT). The handler does nothing but set
``FLAG``; the work checks the flag at safe points:
- the training loop finishes the step in progress and writes checkpoints/last.pt (``vdt.train``);
- before the loop, ``check(phase)`` raises ``Stopped``: after the data scan (its index is saved),
  after each chunk of latent encoding (recorded in progress.json), after the checkpoint load;
- evaluation, in a sweep job, requeues at once (its tasks and sample batches are saved as they end).
The caller then exits (``python -m vdt.train``: status 128 + the signal number) or requeues (the
sweep job, ``ablations/job.py``). Run again, the work resumes where it stopped, to the same result.

DDP: only global rank 0 raises ``Stopped`` before the loop (its requeue or exit ends the other ranks);
in the loop the ranks agree on the flag in the all-reduce every step makes.

Test hook: with ``VDT_SIGNAL_AT=<phase>[:<SIGNAME>]`` in the environment, ``check(phase)`` first sends
that signal (USR2 by default) to its own process, so a test can signal each phase at a known point. With
``VDT_SIGNAL_ONCE=<path>`` as well, it fires only while that file does not exist, and creates it, so a
requeued job does not signal itself again.
"""

import contextlib
import os
import signal
import threading

PHASE_ENV, ONCE_ENV = "VDT_SIGNAL_AT", "VDT_SIGNAL_ONCE"
DEFAULT_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)


class Stopped(Exception):
    """A stop was requested and honoured at ``phase``, with everything done so far on disk."""

    def __init__(self, phase: str, signum: int | None):
        self.phase, self.signum = phase, signum
        name = signal.Signals(signum).name if signum else "a stop request"
        super().__init__(f"stopped by {name} during {phase}")


class StopFlag:
    """The process's stop request: set by a signal handler, read by the work (``is_set`` as a threading.Event)."""

    def __init__(self):
        self._event, self.signum = threading.Event(), None

    def set(self, signum: int | None = None) -> None:
        self.signum = self.signum or signum
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def clear(self) -> None:
        self.signum = None
        self._event.clear()


FLAG = StopFlag()


def exit_status(signum: int | None) -> int:
    """The shell's convention for a process ended by a signal: 128 + its number."""
    return 128 + (signum or signal.SIGTERM)


def rank() -> int:
    return int(os.environ.get("RANK", 0))


def fire_test_hook(phase: str) -> None:
    """``VDT_SIGNAL_AT``: send the named signal to this process when ``phase`` is reached (tests only)."""
    spec = os.environ.get(PHASE_ENV)
    if not spec:
        return
    at, _, name = spec.partition(":")
    if at != phase:
        return
    once = os.environ.get(ONCE_ENV)
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    os.kill(os.getpid(), getattr(signal, f"SIG{name.upper().removeprefix('SIG')}") if name else signal.SIGUSR2)


def check(phase: str) -> None:
    """Raise ``Stopped`` when a stop was requested (rank 0 only); call it where everything done is saved."""
    fire_test_hook(phase)
    if FLAG.is_set() and rank() == 0:
        raise Stopped(phase, FLAG.signum)


@contextlib.contextmanager
def catching(signums=DEFAULT_SIGNALS, on_signal=None):
    """Within the block, each of ``signums`` sets ``FLAG`` (yielded) and then calls ``on_signal(signum)``; a second
    SIGINT interrupts at once (KeyboardInterrupt). The previous handlers come back, and the flag is cleared, on
    exit. Outside the main thread (where Python delivers no signals) it installs nothing."""
    FLAG.clear()
    if threading.current_thread() is not threading.main_thread():
        yield FLAG
        return

    def handler(signum, frame):
        if signum == signal.SIGINT and FLAG.is_set():
            raise KeyboardInterrupt
        FLAG.set(signum)
        if on_signal is not None:
            on_signal(signum)

    previous = {s: signal.signal(s, handler) for s in signums}
    try:
        yield FLAG
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        FLAG.clear()
