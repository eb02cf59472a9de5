"""Progress of long loops (training steps, scored and evaluated images) on stderr, for a person watching or a log.

On a terminal: a tqdm bar. Otherwise (a log file, a pipe, a batch job's stderr): one line at most every
`LINE_SECONDS`, with the count, the rate and the time left, so a long run is never silent and its log stays short.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["LINE_SECONDS", "Progress", "duration"]

LINE_SECONDS = 60.0  # the least time between two progress lines when stderr is not a terminal


def duration(seconds: float) -> str:
    """A duration for people: `45s`, `12m05s`, `3h07m`.

    Args:
        seconds: the duration in seconds (>= 0; rounded to whole seconds).
    """
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """Counts done units of a known total and shows them: a bar on a terminal, else a line now and then.

    Lines read e.g. `train: step 1,200/36,000 (3%), epoch 2/30, loss 0.0123; 2.1 steps/s, 4h36m left`, or
    `score: image 1,200/5,000 (24%); 40.1 images/s, 1m35s left`. A disabled Progress (`enabled=False`, e.g. on a
    torchrun rank other than 0) shows nothing.
    """

    def __init__(
        self, total: int, *, desc: str, unit: str, done: int = 0, enabled: bool = True, stream: TextIO | None = None
    ) -> None:
        """Start counting at `done` of `total` (a resumed run starts part way; its rate counts from here).

        Args:
            total: the units of the whole loop (steps, images).
            desc: what is counted, first on each line (`train`, `eval koniq10k`).
            unit: the unit's name, singular (`step`, `image`); lines add an `s`.
            done: units already done before this process started.
            enabled: False shows nothing.
            stream: where to write; default sys.stderr at the time of the call.
        """
        self.total, self.desc, self.unit, self.done = total, desc, unit, done
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled
        self.start_done = done
        self.start = self.last_line = time.monotonic()
        self.status = ""
        self.bar: Any = None
        if enabled and self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, initial=done, desc=desc, unit=unit, file=self.stream, dynamic_ncols=True, leave=False
            )

    def update(self, n: int = 1, status: str | None = None) -> None:
        """Count `n` more units done; `status` (e.g. `epoch 2/30, loss 0.0123`) replaces the shown status."""
        self.done += n
        if status is not None:
            self.status = status
        if self.bar is not None:
            if status is not None:
                self.bar.set_postfix_str(status, refresh=False)
            self.bar.update(n)
        elif self.enabled and time.monotonic() - self.last_line >= LINE_SECONDS:
            self.stream.write(self.line() + "\n")
            self.stream.flush()
            self.last_line = time.monotonic()

    def line(self) -> str:
        """The progress line: count, share, status, rate and time left (the rate of this process's units so far)."""
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        text = f"{self.desc}: {self.unit} {self.done:,}/{self.total:,}{share}"
        text += f", {self.status}" if self.status else ""
        elapsed, counted = time.monotonic() - self.start, self.done - self.start_done
        if counted > 0 and elapsed > 0:
            rate = counted / elapsed
            text += f"; {rate:.3g} {self.unit}s/s, {duration(max(self.total - self.done, 0) / rate)} left"
        return text

    def write(self, line: str) -> None:
        """Write a message line (an evaluation's result) without breaking the bar."""
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream)

    def close(self) -> None:
        """Remove the bar (lines stay as they are). Closing twice does nothing."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def finish(self) -> None:
        """The loop is done: remove the bar and, after a run of at least `LINE_SECONDS`, write a summary line.

        The summary reads e.g. `score: 5,000 images in 2m05s (40 images/s)`, counting this process's units; a resumed
        run adds the total and what an earlier run had done (`...; 5,000/5,000 with the 2,000 done before`), so its
        count agrees with the progress lines. A short run (no progress line was due) ends as quietly as it ran.
        """
        elapsed, counted = time.monotonic() - self.start, self.done - self.start_done
        self.close()
        if self.enabled and elapsed >= LINE_SECONDS:
            rate = f" ({counted / elapsed:.3g} {self.unit}s/s)" if counted > 0 and elapsed > 0 else ""
            s = "" if counted == 1 else "s"
            before = ""
            if self.start_done:
                before = f"; {self.done:,}/{self.total:,} with the {self.start_done:,} done before"
            self.write(f"{self.desc}: {counted:,} {self.unit}{s} in {duration(elapsed)}{rate}{before}")
