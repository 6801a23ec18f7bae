"""Micro-batching on the event loop: concurrent requests' events share one state update and one store commit.

A request's events are validated first (a bad request fails alone, with its own 4xx), then queued with a future.
One drain task per burst takes whole requests up to `max_batch` events (at least one request, whatever its
size), after waiting `wait_s` for more to arrive (0: only those already queued, which under load are the ones
that came in while the previous batch ran), applies them with writer.apply_requests (one batched step, one
transaction) and only then resolves their futures: an event is acknowledged once it is durable. The batch runs
on the event loop itself: a worker is one core; `longrec serve --workers K` runs K of them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence

from longrec.serve.recommender import Recommender
from longrec.serve.types import Applied, Event
from longrec.serve.writer import Request, apply_requests

MAX_BATCH = 512  # events per group commit: bounds one batch's latency and its write transaction
BATCH_WAIT_MS = 0.0  # how long a batch waits for more requests before it runs


class Batcher:
    """submit(events) -> Applied, batched with whatever else is queued on this event loop."""

    def __init__(self, rec: Recommender, max_batch: int = MAX_BATCH, wait_ms: float = BATCH_WAIT_MS) -> None:
        self.rec = rec
        self.max_batch = max_batch
        self.wait_s = wait_ms / 1e3
        self._queue: deque[tuple[Request, asyncio.Future[Applied]]] = deque()
        self._drain: asyncio.Task[None] | None = None
        self.batches = 0  # counters for /healthz and the tests
        self.batched_requests = 0

    async def submit(self, events: Sequence[Event]) -> Applied:
        request = self.rec.validate(events)  # ServeError here: this request only
        if not events:
            return Applied(0, 0)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Applied] = loop.create_future()
        self._queue.append((request, future))
        if self._drain is None or self._drain.done():
            self._drain = loop.create_task(self._run())
        return await future

    def _take(self) -> list[tuple[Request, asyncio.Future[Applied]]]:
        batch = [self._queue.popleft()]
        size = len(batch[0][0].events)
        while self._queue and size + len(self._queue[0][0].events) <= self.max_batch:
            request = self._queue.popleft()
            size += len(request[0].events)
            batch.append(request)
        return batch

    async def _run(self) -> None:
        while self._queue:
            await asyncio.sleep(self.wait_s)  # sleep(0) still lets requests already read reach the queue
            batch = [(r, f) for r, f in self._take() if not f.cancelled()]  # a client gone before it ran
            if not batch:
                continue
            try:
                counts = apply_requests(self.rec, [r for r, _ in batch])
            except Exception as e:  # noqa: BLE001  # the store failed (or a bug): every request of the batch gets it,
                # none is left waiting
                for _, f in batch:
                    if not f.done():
                        f.set_exception(e)
                continue
            self.batches += 1
            self.batched_requests += len(batch)
            for (_, f), applied in zip(batch, counts, strict=True):
                if not f.done():
                    f.set_result(applied)
