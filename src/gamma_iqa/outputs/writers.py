r"""Row writers with resume: score rows as CSV or JSON Lines, each on disk as soon as it is finished, or a JSON array.

A run killed or interrupted midway leaves complete rows and at most one cut last row. Reopening the same file with
`resume=True` cuts that row, appends, and `RowWriter.remaining` says which entries still need a row: each complete row
cancels one entry with the same name (its `path` column), so an input listed twice is scored twice. An uninterrupted
run and an interrupted-then-resumed one leave byte-identical files. A Python caller resumes as the command line does:

    with open_rows("scores.csv", "csv", resume=True) as rows:
        for row in Scorer(model).run(rows.remaining(entries)):
            rows.write(row)

File names are kept exactly. Files are UTF-8; a CSV field holding a newline or a quote is quoted (RFC 4180) and read
back as written. A file name that is not valid UTF-8 (on Linux, bytes such as `b_\xe9.png`, which Python holds as the
surrogate escapes of PEP 383) is written to CSV as its own bytes (the `surrogateescape` error handler), so the `path`
column names the very file; read such a file with `errors="surrogateescape"` (pandas: `encoding_errors=`). JSON and
JSON Lines stay ASCII and hold such a name as `\udcXX` escapes, which `json.loads` turns back into the same name.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from ..data.inputs import Entry
from ..data.transforms import ascii_digits
from ..engine.scoring import DETAIL_FIELDS, ScoreRow

__all__ = [
    "FORMATS",
    "RowWriter",
    "drop_partial_line",
    "json_row",
    "open_rows",
    "read_done",
    "read_rows",
    "shown_name",
    "skip_done",
]

FORMATS = ("csv", "jsonl", "json")
ENCODING, ERRORS = "utf-8", "surrogateescape"  # how csv and jsonl files are written and read (see the module text)


def shown_name(name: str) -> str:
    r"""`name` on one printable line, for messages and the HTML page (lossy only in the rare backslash case).

    Bytes that are not UTF-8 show as `\xNN`, control characters (a newline in a file name) as `\n`, `\t`, `\xNN`.
    """
    try:
        data = name.encode("utf-8", ERRORS)
    except UnicodeEncodeError:  # a lone surrogate that no file name decodes to (from a JSON manifest)
        data = name.encode("utf-8", "backslashreplace")
    text = data.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _complete_end(output: Path, fmt: str) -> int:
    """The byte offset just after the last complete row of `output` (0: none; csv counts its header as a row).

    A jsonl row is one line. A csv row ends at a newline outside quotes: the csv module quotes a field holding a newline
    or a quote and doubles the quotes inside it, so an odd count of quotes so far means the newline is inside a field.
    """
    end = pos = 0
    inside = False
    with output.open("rb") as f:
        for line in f:  # split at b"\n" only, the rows' terminator
            pos += len(line)
            if fmt == "csv":
                inside ^= line.count(b'"') % 2 == 1
            if line.endswith(b"\n") and not inside:
                end = pos
    return end


def _complete_lines(output: Path, end: int) -> Iterator[str]:
    """The lines of `output` up to byte `end`, decoded, with their newlines (streamed: memory stays one line)."""
    pos = 0
    with output.open("rb") as f:
        for line in f:
            if pos >= end:
                return
            pos += len(line)
            yield line.decode(ENCODING, ERRORS)


def read_rows(output: str | os.PathLike[str], fmt: str) -> Iterator[dict[str, Any]]:
    """The complete rows already in `output`, a csv or jsonl file of score rows, as mappings of their columns.

    Streamed; a last row cut short by a kill is not among them (see `drop_partial_line`), and a missing file holds no
    rows. CSV values are strings (an empty field: ""); jsonl values are as written (a missing score: None).

    Raises:
        ValueError: a csv file without a `path` column, or a jsonl line that is not a JSON object with a `path` (names
            the `output` parameter and the file).
    """
    output = Path(output)
    if not output.exists():
        return
    lines = _complete_lines(output, _complete_end(output, fmt))
    if fmt == "jsonl":
        for n, line in enumerate(lines, 1):
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    hint = "; it is a CSV file: use `fmt` csv" if n == 1 and line.startswith("path,") else ""
                    raise ValueError(f"`output` {output}: line {n} is not JSON ({e.msg}){hint}") from None
                if not isinstance(record, dict) or "path" not in record:
                    raise ValueError(f"`output` {output}: line {n} is not a score row (no path)")
                yield record
        return
    reader = csv.DictReader(lines)
    if reader.fieldnames is not None and "path" not in reader.fieldnames:
        hint = (
            "; it holds JSON lines: use `fmt` jsonl"
            if reader.fieldnames[:1] and reader.fieldnames[0][:1] == "{"
            else ""
        )
        raise ValueError(f"`output` {output}: not a file of score rows (its header has no path column){hint}")
    yield from reader


def read_done(output: str | os.PathLike[str], fmt: str) -> Counter[str]:
    """Paths (with multiplicity) of the complete rows already in `output`, a csv or jsonl file of score rows.

    Raises:
        ValueError: as `read_rows`.
    """
    return Counter(r["path"] for r in read_rows(output, fmt))


def drop_partial_line(output: str | os.PathLike[str], fmt: str = "csv") -> None:
    """Cut a last row of `output` (csv or jsonl) that a kill left unfinished; complete rows are never touched."""
    output = Path(output)
    end = _complete_end(output, fmt)
    if end < output.stat().st_size:
        with output.open("r+b") as f:
            f.truncate(end)


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


def json_row(values: Mapping[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    """One row as `--format json` and `jsonl` write it: `fields` in order (a missing one None), from a row's values.

    A `crops` of digits (`10`) becomes a number; `center`, `none` and `10 (upscaled)` stay strings.
    """
    record = {k: values.get(k) for k in fields}
    if isinstance(record.get("crops"), str) and ascii_digits(record["crops"]):
        record["crops"] = int(record["crops"])
    return record


class RowWriter:
    """Writes score rows to a file or stdout: csv and jsonl row by row, json as one array when closed.

    Use it as a context manager (see `open_rows`): the file is opened when the block starts (created or truncated;
    on resume, cut after its last complete row and appended to) and closed, the JSON array written, when it ends, also
    when the block ends in an exception or a Ctrl-C (every row written so far is complete on disk).

    Attributes:
        written: rows written since the writer was opened (json: kept for the array).
        failed: how many of them carry an error.
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
        self._rows: list[dict[str, Any]] = []
        self.written = self.failed = 0

    def existing(self) -> Iterator[dict[str, Any]]:
        """On resume, the complete rows already in `output` (see `read_rows`); otherwise none.

        Raises:
            ValueError: as `read_rows`.
        """
        if self.resume:
            yield from read_rows(self.output, self.fmt)

    def remaining(self, entries: Sequence[Entry]) -> list[Entry]:
        """The entries that still need a row: all of them, or on resume those without a complete row in `output`.

        Raises:
            ValueError: as `read_rows`.
        """
        if not self.resume:
            return list(entries)
        self._check_columns()
        return skip_done(entries, read_done(self.output, self.fmt))

    def _check_columns(self) -> None:
        """On resume, refuse an output whose rows have other columns than this writer's (--details on one run only).

        Raises:
            ValueError: the first complete row's columns (csv: the header) are not `fields` (names `resume`).
        """
        first = next(read_rows(self.output, self.fmt), None)
        if first is not None and tuple(first) != self.fields:
            raise ValueError(
                f"`resume`: {shown_name(str(self.output))} has the columns {','.join(first)}, this run writes "
                f"{','.join(self.fields)}; resume with the first run's options (`details`, `mos_scale`, `calibration`)"
            )

    def open(self) -> RowWriter:
        """Open the output (see the class); returns this writer."""
        append = False
        if self.output is not None and self.resume and self.output.exists():
            drop_partial_line(self.output, self.fmt)
            append = self.output.stat().st_size > 0
        if self.output is None:
            self._stream = sys.stdout
        else:
            mode = "a" if append else "w"
            self._stream = open(self.output, mode, encoding=ENCODING, errors=ERRORS, newline="")  # noqa: SIM115  (close())
        if self.fmt == "csv" and not append:
            self._emit(self._csv_line(self.fields))
        self._rows, self.written, self.failed = [], 0, 0
        return self

    def _csv_line(self, values: Sequence[Any]) -> str:
        """One CSV row, quoted as needed, with its newline."""
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(values)
        return buf.getvalue()

    def _emit(self, text: str) -> None:
        """Write `text` in one call, so that an interrupt leaves whole rows; flush it to disk.

        A stdout that cannot encode a name (strict UTF-8) gets the name's own bytes, as a file does.
        """
        stream = self._stream
        try:
            stream.write(text)
        except UnicodeEncodeError:
            buffer = getattr(stream, "buffer", None)
            if buffer is None:
                raise
            stream.flush()
            buffer.write(text.encode(stream.encoding or ENCODING, ERRORS))
            buffer.flush()
        stream.flush()

    def write(self, row: ScoreRow | Mapping[str, Any]) -> None:
        """Write one row: a ScoreRow, or a mapping with the writer's fields (a missing one is empty).

        With csv and jsonl the row is on disk before this returns; with json it is kept until `close`. In JSON a
        `crops` of digits (`10`) is a number; `center`, `none` and `10 (upscaled)` are strings (csv: all text).

        Raises:
            RuntimeError: the writer is not open.
        """
        if self._stream is None:
            raise RuntimeError("RowWriter.write outside its `with` block (or before open())")
        values = row.as_dict() if isinstance(row, ScoreRow) else row
        if self.fmt == "csv":
            cells = (values.get(k) for k in self.fields)
            self._emit(self._csv_line(["" if v is None else v for v in cells]))
        elif self.fmt == "jsonl":
            self._emit(json.dumps(json_row(values, self.fields)) + "\n")  # ASCII: odd characters, bytes as \u escapes
        else:
            self._rows.append(json_row(values, self.fields))
        self.written += 1
        self.failed += bool(values.get("error"))

    def close(self) -> None:
        """Write the JSON array (json), and close the file (stdout stays open). Closing twice does nothing."""
        if self._stream is None:
            return
        if self.fmt == "json":
            self._emit(json.dumps(self._rows, indent=1) + "\n")
        if self._stream is not sys.stdout:
            self._stream.close()
        self._stream, self._rows = None, []

    def __enter__(self) -> RowWriter:
        """Open the output for the block."""
        return self.open()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        """Close the output, also when the block fails: the rows written so far stay (json: as an array)."""
        self.close()


def open_rows(
    output: str | os.PathLike[str] | None = None,
    fmt: str = "csv",
    *,
    resume: bool = False,
    details: bool = False,
    columns: Sequence[str] = (),
) -> RowWriter:
    """A writer of score rows to `output` (None: stdout) in `fmt`, for a `with` block; see `RowWriter`.

    Args:
        output: the file written; None: stdout.
        fmt: `csv`, `jsonl` or `json`.
        resume: keep the complete rows already in `output` and append the rest.
        details: write DETAIL_FIELDS (spread, p_bad ... p_perfect) after the usual columns.
        columns: extra columns after those (`mos`, `calibrated`: a ScoreRow's `extra`).

    Raises:
        ValueError: as `RowWriter`.
    """
    fields = ScoreRow.FIELDS + (DETAIL_FIELDS if details else ()) + tuple(columns)
    return RowWriter(output, fmt, resume=resume, fields=fields)
