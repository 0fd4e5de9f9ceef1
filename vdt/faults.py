"""Fault hooks for the fault-injection run (scripts/fault_injection.py); inert unless ``VDT_FAULTS`` is set.

``inject(point)`` is called where a crash or a full disk does the most harm: a checkpoint written but not
yet renamed into place (``checkpoint before rename``), an evaluation task's part just written (``eval part
written``). A fault is armed by a file ``$VDT_FAULTS/<point>.<action>`` (spaces in the point as ``_``); the
first process to reach the point claims the file (a rename, so it fires once) and then:
- ``kill``: SIGKILLs itself (a crash between two writes: the file is torn or the work half saved);
- ``enospc``: raises ``OSError(ENOSPC)`` (a full disk for this one write).
"""

import errno
import os
import signal
from pathlib import Path

ENV = "VDT_FAULTS"


def inject(point: str) -> None:
    """Fire the fault armed for ``point``, if any (see the module docstring)."""
    folder = os.environ.get(ENV)
    if not folder:
        return
    stem = point.replace(" ", "_")
    for armed in sorted(Path(folder).glob(f"{stem}.*")):
        action = armed.suffix[1:]
        if action not in ("kill", "enospc"):
            continue
        try:
            os.rename(armed, armed.with_name(f"{armed.name}.fired-{os.getpid()}"))
        except FileNotFoundError:  # another process claimed it first
            continue
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise OSError(errno.ENOSPC, f"No space left on device (injected at {point})")
