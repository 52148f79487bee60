"""Preemption: a SIGTERM (TPU/VM preemption) makes the loop save a checkpoint and stop cleanly.

``TrainLoop.run`` holds a ``PreemptionFlag`` while it trains; at each host-loop boundary every
worker asks whether any worker got the signal (``distribute.any_worker``), so all of them save the
same step and stop together, then raise ``Preempted``. Rerunning the same command resumes.
"""

from __future__ import annotations

import signal
import threading


class Preempted(RuntimeError):
    """Raised after the checkpoint that a SIGTERM (TPU/VM preemption) triggered has been written."""


class PreemptionFlag:
    """Truthy once SIGTERM arrived; the loop then saves a checkpoint and stops cleanly.

    Installs its handler only on the main thread (Python allows signal handlers nowhere else);
    ``restore`` puts the previous handler back."""

    def __init__(self):
        self._set = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self._set = True

    def __bool__(self):
        return self._set

    def restore(self):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
