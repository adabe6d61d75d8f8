"""Stop a batch run between images on SIGTERM or Ctrl+C, instead of dying in the middle of a write."""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType


class StopRequest:
    """While entered (``with``), the first SIGTERM / SIGINT only sets :attr:`signum`; the run checks
    :attr:`requested` between images and ends cleanly. A second Ctrl+C raises KeyboardInterrupt at once, a
    second SIGTERM ends the process as SIGTERM does. Outside the main thread (signals cannot be caught there)
    nothing is installed."""

    def __init__(self, program: str) -> None:
        self.program = program
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_status(self) -> int:
        """The shell's convention for a run ended by a signal: 128 + its number."""
        return 128 + (self.signum or 0)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.signum = signum
        for caught, previous in self._previous.items():  # the next signal acts at once
            signal.signal(caught, previous)
        print(f"\n{self.program}: {signal.Signals(signum).name} received: stopping after the current image "
              "(send it again to stop at once)", file=sys.stderr)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()
