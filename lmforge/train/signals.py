"""Stop cleanly on Ctrl-C or SIGTERM: finish the current step, checkpoint, exit.

While training, SIGINT and SIGTERM only set a flag that the loop checks between
optimizer steps, so the checkpoint it then writes holds a consistent state (never a
half-applied step) and ``--resume`` continues exactly. A second Ctrl-C stops at once.
"""

from __future__ import annotations

import signal
import threading


class StopRequests:
    """Context manager; ``requested`` names the signal once one arrived."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
