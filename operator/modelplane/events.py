"""Events posted off the reconcile's path, as client-go's recorder posts them.

A reconcile that waited for its Events to be created would spend two of its eight API round trips on
them while a thousand ModelDeployments wait their turn. ``EventRecorder`` queues each Event and one
thread of its own creates them in order; a queue that is full (the API server far behind) drops the
Event, counts it and says so once, as client-go's broadcaster does rather than block a controller.
Events are informative: status and conditions carry what a user must know.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from dataclasses import dataclass
from typing import Final, Protocol

from modelplane import metrics
from modelplane.kube import KubeError

log = logging.getLogger(__name__)

CAPACITY: Final = 1000  # client-go's broadcaster queues as many


class PostEvent(Protocol):
    def __call__(
        self, namespace: str, name: str, uid: str, warning: bool, reason: str, message: str
    ) -> None: ...


@dataclass(frozen=True)
class _Event:
    namespace: str
    name: str
    uid: str
    warning: bool
    reason: str
    message: str


class EventRecorder:
    """Call it as ``post`` would be called: the Event is created soon after, by the recorder's thread."""

    def __init__(self, post: PostEvent, capacity: int = CAPACITY) -> None:
        self._post = post
        self._queue: queue.Queue[_Event | None] = queue.Queue(maxsize=capacity)
        self._thread: threading.Thread | None = None
        self._dropping = False  # said once per run of drops, not once per Event
        self._dropping_lock = threading.Lock()  # workers post from threads of their own

    def __call__(self, namespace: str, name: str, uid: str, warning: bool, reason: str, message: str) -> None:
        try:
            self._queue.put_nowait(_Event(namespace, name, uid, warning, reason, message))
        except queue.Full:
            metrics.EVENTS_DROPPED.inc()
            with self._dropping_lock:
                first, self._dropping = not self._dropping, True
            if first:
                log.warning("%d Events are waiting to be posted: dropping new ones", self._queue.maxsize)
        else:
            with self._dropping_lock:
                self._dropping = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="events", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Post what is queued (for at most TIMEOUT seconds), then stop."""
        if self._thread is None:
            return
        with contextlib.suppress(queue.Full):  # the thread is daemonic: it goes with the process
            self._queue.put(None, timeout=timeout)
        self._thread.join(timeout)

    def _run(self) -> None:
        while (event := self._queue.get()) is not None:
            try:
                self._post(event.namespace, event.name, event.uid, event.warning, event.reason, event.message)
            except KubeError as error:  # an Event is informative; losing one must not stop the others
                log.warning("could not post an event: %s", error)
