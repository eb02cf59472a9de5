"""Row writers with resume: score rows as CSV or JSON Lines, each on disk as soon as it is finished, or a JSON array.

A run killed midway leaves complete rows and at most one cut last line. Reopening the same file with `resume=True`
cuts that line, appends, and `RowWriter.remaining` says which entries still need a row: each complete row cancels one
entry with the same name (its `path` column), so an input listed twice is scored twice. An uninterrupted run and an
interrupted-then-resumed one leave byte-identical files. A Python caller resumes as the command line does:

    with open_rows("scores.csv", "csv", resume=True) as rows:
        for row in Scorer(model).run(rows.remaining(entries)):
            rows.write(row)
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from ..data.inputs import Entry
from ..engine.scoring import ScoreRow

__all__ = ["FORMATS", "RowWriter", "drop_partial_line", "open_rows", "read_done", "skip_done"]

FORMATS = ("csv", "jsonl", "json")


def read_done(output: str | os.PathLike[str], fmt: str) -> Counter[str]:
    """Paths (with multiplicity) of the complete rows already in `output`, a csv or jsonl file of score rows.

    A last line cut short by a kill does not count (the writer removes it before appending: see
    `drop_partial_line`). A missing file holds no rows.
    """
    output = Path(output)
    if not output.exists():
        return Counter()
    data = output.read_bytes()
    lines = data[: data.rfind(b"\n") + 1].decode("utf-8").splitlines()
    if fmt == "jsonl":
        return Counter(json.loads(line)["path"] for line in lines if line.strip())
    return Counter(r["path"] for r in csv.DictReader(lines))


def drop_partial_line(output: str | os.PathLike[str]) -> None:
    """Cut a last line of `output` that a kill left unfinished; complete rows are never touched."""
    output = Path(output)
    data = output.read_bytes()
    if data and not data.endswith(b"\n"):
        with output.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def skip_done(entries: Sequence[Entry], done: Counter[str]) -> list[Entry]:
    """Entries not yet written, in order: each written row cancels one entry with the same name."""
    left = Counter(done)
    out = []
    for e in entries:
        if left[e.name] > 0:
            left[e.name] -= 1
        else:
            out.append(e)
    return out


class RowWriter:
    """Writes score rows to a file or stdout: csv and jsonl row by row, json as one array when closed.

    Use it as a context manager (see `open_rows`): the file is opened when the block starts (created or truncated;
    on resume, cut after its last complete row and appended to) and closed, the JSON array written, when it ends.
    """

    def __init__(
        self,
        output: str | os.PathLike[str] | None = None,
        fmt: str = "csv",
        *,
        resume: bool = False,
        fields: Sequence[str] = ScoreRow.FIELDS,
    ) -> None:
        """Check the arguments; nothing is opened or read yet.

        Args:
            output: the file written; None: stdout.
            fmt: `csv` (a header, then one line per row), `jsonl` (one JSON object per line) or `json` (one array).
            resume: keep the complete rows already in `output` and append the rest (csv and jsonl only).
            fields: the columns, in order; a row's other attributes are not written.

        Raises:
            ValueError: an unknown `fmt`, `resume` without `output`, or `resume` with `fmt` json (names the
                parameters).
        """
        if fmt not in FORMATS:
            raise ValueError(f"`fmt` must be one of {', '.join(FORMATS)}, got {fmt!r}")
        if resume and output is None:
            raise ValueError("`resume` needs `output` FILE (the rows to keep and append to)")
        if resume and fmt == "json":
            raise ValueError("`resume` works with `fmt` csv or jsonl (a JSON array cannot be appended to)")
        self.output = None if output is None else Path(output)
        self.fmt, self.resume, self.fields = fmt, resume, tuple(fields)
        self._stream: IO[str] | None = None
        self._writer: Any = None
        self._rows: list[dict[str, Any]] = []

    def remaining(self, entries: Sequence[Entry]) -> list[Entry]:
        """The entries that still need a row: all of them, or on resume those without a complete row in `output`."""
        if not self.resume:
            return list(entries)
        return skip_done(entries, read_done(self.output, self.fmt))

    def open(self) -> RowWriter:
        """Open the output (see the class); returns this writer."""
        append = False
        if self.output is not None and self.resume and self.output.exists():
            drop_partial_line(self.output)
            append = self.output.stat().st_size > 0
        if self.output is None:
            self._stream = sys.stdout
        else:
            self._stream = open(self.output, "a" if append else "w", newline="")  # noqa: SIM115  (closed by close())
        self._writer = csv.DictWriter(self._stream, fieldnames=list(self.fields), lineterminator="\n")
        if self.fmt == "csv" and not append:
            self._writer.writeheader()
        self._rows = []
        return self

    def write(self, row: ScoreRow | Mapping[str, Any]) -> None:
        """Write one row: a ScoreRow, or a mapping with the writer's fields (a missing one is empty).

        With csv and jsonl the row is on disk before this returns; with json it is kept until `close`.

        Raises:
            RuntimeError: the writer is not open.
        """
        if self._stream is None:
            raise RuntimeError("RowWriter.write outside its `with` block (or before open())")
        values = row.as_dict() if isinstance(row, ScoreRow) else row
        record = {k: values.get(k) for k in self.fields}
        if self.fmt == "csv":
            self._writer.writerow({k: ("" if v is None else v) for k, v in record.items()})
        elif self.fmt == "jsonl":
            self._stream.write(json.dumps(record) + "\n")
        else:
            self._rows.append(record)
            return
        self._stream.flush()  # a finished score is on disk before the next one starts

    def close(self) -> None:
        """Write the JSON array (json), and close the file (stdout stays open). Closing twice does nothing."""
        if self._stream is None:
            return
        if self.fmt == "json":
            json.dump(self._rows, self._stream, indent=1)
            self._stream.write("\n")
        if self._stream is not sys.stdout:
            self._stream.close()
        else:
            self._stream.flush()
        self._stream, self._rows = None, []

    def __enter__(self) -> RowWriter:
        """Open the output for the block."""
        return self.open()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        """Close the output, also when the block fails: the rows written so far stay (json: as an array)."""
        self.close()


def open_rows(output: str | os.PathLike[str] | None = None, fmt: str = "csv", *, resume: bool = False) -> RowWriter:
    """A writer of score rows to `output` (None: stdout) in `fmt`, for a `with` block; see `RowWriter`.

    Raises:
        ValueError: as `RowWriter`.
    """
    return RowWriter(output, fmt, resume=resume)
