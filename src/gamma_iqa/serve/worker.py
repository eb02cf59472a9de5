"""The device worker: the one thread using the model, merging the prepared images of all requests into forwards.

`Job` is one image on its way from its request to the worker and back (its row, on the request's event loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..data.inputs import Entry
from ..data.transforms import Crops
from ..engine.scoring import Scorer, ScoreRow

__all__ = ["DeviceWorker", "Job"]


@dataclass(eq=False)
class Job:
    """One image on its way: its entry, the Scorer of its request's options, and the future its row goes to."""

    seq: int  # unique across requests: the index of its item and row
    entry: Entry
    scorer: Scorer
    cost: int  # its crops, as the queue counts them
    future: asyncio.Future  # on its request's event loop
    item: dict[str, Any] | None = None

    @property
    def key(self) -> tuple[Crops, bool]:
        """(crop mode, details) of its Scorer: images of one key may share a forward."""
        return self.scorer.crops, self.scorer.details

    def settle(self, row: ScoreRow | None = None, error: BaseException | None = None) -> None:
        """Hand the row (or the error) to the request, on its event loop; a request that gave up takes none."""

        def done() -> None:
            if self.future.done():
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(row)

        with contextlib.suppress(RuntimeError):  # the loop closed: the server has stopped
            self.future.get_loop().call_soon_threadsafe(done)


class DeviceWorker:
    """The only thread using the model: merges the prepared images of all requests into the model's forwards.

    Each round takes up to `batch_size` images from the queue: all that are waiting, and while the last forward of
    a crop mode would be padded, more for up to `max_wait` seconds. Images of one (crop mode, details) are scored
    together by `Scorer.score_prepared`, in forwards of the Scorer's `per_forward` images.
    """

    def __init__(
        self,
        batch_size: int,
        max_wait: float,
        on_round: Callable[[int], None],
        on_scored: Callable[[int, float], None],
    ) -> None:
        """A worker merging the images of requests into rounds of at most `batch_size`.

        `on_round(n)` is told the images of each round before they are scored, `on_scored(crops, seconds)` the crops
        (as the queue counts them) and the seconds of the round once they are.
        """
        self.batch_size, self.max_wait, self.on_round, self.on_scored = batch_size, max_wait, on_round, on_scored
        self.queue: queue.Queue[Job | None] = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name="gamma-iqa-device", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self.thread.start()

    def put(self, job: Job) -> None:
        """Queue a prepared image."""
        self.queue.put(job)

    def stop(self, wait: bool = True) -> None:
        """Score what is queued (whose requests still wait), then end the thread; joined when `wait`."""
        self.queue.put(None)
        if wait:
            self.thread.join()

    def _padded(self, jobs: list[Job]) -> bool:
        """Whether the last forward of some key would be padded with zero images."""
        counts: dict[tuple[Crops, bool], list[int]] = {}  # key -> [images, images per forward]
        for job in jobs:
            counts.setdefault(job.key, [0, job.scorer.per_forward])[0] += 1
        return any(n % per for n, per in counts.values())

    def _take(self) -> list[Job] | None:
        """The images of the next round; None once stopped."""
        first = self.queue.get()
        if first is None:
            return None
        jobs, deadline = [first], time.monotonic() + self.max_wait
        while len(jobs) < self.batch_size:
            try:
                wait = max(0.0, deadline - time.monotonic()) if self._padded(jobs) else 0.0
                job = self.queue.get(timeout=wait) if wait else self.queue.get_nowait()
            except queue.Empty:
                break
            if job is None:  # stop after this round
                self.queue.put(None)
                break
            jobs.append(job)
        return jobs

    def _loop(self) -> None:
        """Score rounds until stopped."""
        while (jobs := self._take()) is not None:
            live = [job for job in jobs if not job.future.done()]  # requests that timed out or were stopped: nothing
            if not live:
                continue
            groups: dict[tuple[Crops, bool], list[Job]] = {}
            for job in live:
                groups.setdefault(job.key, []).append(job)
            self.on_round(len(live))  # before any request is answered: a client that has its rows sees it in /metrics
            started = time.perf_counter()
            outcomes = [outcome for group in groups.values() for outcome in self._score(group)]
            # The rate is updated before any request is answered: what a client sees next already includes its round.
            self.on_scored(sum(job.cost for job in live), time.perf_counter() - started)
            for job, row, error in outcomes:
                job.settle(row, error)

    @staticmethod
    def _score(group: list[Job]) -> list[tuple[Job, ScoreRow | None, BaseException | None]]:
        """Score one key's images: (job, its row, None), or (job, None, the error) for each when the model failed.

        A failure of the model (out of memory, say) fails these requests only (500); the server goes on.
        """
        try:
            rows = group[0].scorer.score_prepared([job.item for job in group], {job.seq: job.entry for job in group})
        except Exception as e:
            return [(job, None, e) for job in group]
        by_seq = {row.index: row for row in rows}
        return [(job, by_seq[job.seq], None) for job in group]
