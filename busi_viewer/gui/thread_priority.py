"""Background threads yield the CPU to the inference thread and the event loop.

On a 2-core workstation the thumbnail decoder and the folder hasher compete with the model for the same cores;
an image the user is waiting for matters more than a thumbnail they may scroll to.
"""

from __future__ import annotations

import os
import sys
import threading

BACKGROUND_NICENESS = 10


def lower_current_thread_priority(increment: int = BACKGROUND_NICENESS) -> bool:
    """Raise the calling thread's niceness by ``increment`` (Linux: niceness is per thread). Returns whether
    it changed; elsewhere, or where the OS refuses, it leaves the thread as it is."""
    if not sys.platform.startswith("linux") or not hasattr(os, "setpriority"):
        return False
    thread_id = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, thread_id)
        os.setpriority(os.PRIO_PROCESS, thread_id, min(19, current + increment))
    except OSError:
        return False
    return True
