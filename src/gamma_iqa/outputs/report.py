"""A self-contained HTML page of scored images, in memory bounded whatever the run's size.

The page shows every scored image of a small run, best first; of a large run (more than twice `top` scored images)
the `top` best and the `top` worst, and it says so. It gives the counts of the whole run and lists the failures (the
first `ERRORS_SHOWN`; the output file holds all of them). Thumbnails are embedded JPEGs of at most `THUMB_SIDE` pixels
a side, made when the page is written, only for the images it shows. `Report` takes the rows one at a time and keeps
only what the page shows (about 2 x `top` rows), so memory and page size do not grow with the number of images.
Quality maps (`score --map`) are shown beside their images, larger than the thumbnails, as links to their PNG files
(not embedded: a click opens one full size, its colour bar readable); a legend above the cards names their colours:
the one 0..1 scale of maps drawn with `--map-scale fixed` (the default with `--html`), or says each map has its own.
"""

from __future__ import annotations

import base64
import heapq
import html
import io
import os
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..data.transforms import load_image, to_rgb
from ..engine.calibration import CALIBRATED_COLUMN, MOS_COLUMN
from ..engine.scoring import LEVEL_NAMES, ScoreRow
from .writers import shown_name

__all__ = ["DEFAULT_TOP", "ERRORS_SHOWN", "MAP_COLOURS", "PAGE_MARK", "THUMB_SIDE", "Report", "thumbnail", "write_html"]

DEFAULT_TOP = 100  # best and worst images shown by default: about 2 x 100 x 7.5 KB = 1.5 MB of page
ERRORS_SHOWN = 1000  # failures listed (one table row each, no image)
THUMB_SIDE = 160  # px, the longest side of a thumbnail
PAGE_MARK = "<title>gamma-iqa scores</title>"  # in the head of every page: how a page of ours is told (runs.py)
# The maps' colour map (matplotlib's RdYlGn, outputs/maps.py), low to high: the 11 colours it interpolates between.
MAP_COLOURS = ("#a50026", "#d73027", "#f46d43", "#fdae61", "#fee08b", "#ffffbf")
MAP_COLOURS += ("#d9ef8b", "#a6d96a", "#66bd63", "#1a9850", "#006837")

_STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:20px 0 8px} p.meta{color:#666;margin:0 0 16px}
.grid{display:flex;flex-wrap:wrap;gap:12px}
.card{width:180px;background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px}
.card img{display:block;width:160px;height:160px;object-fit:contain;margin:0 auto;background:#eee}
.path{font-size:11px;word-break:break-all;margin:6px 0 2px}
.scene{font-size:11px;color:#666}
.bar{height:8px;background:#e5e5e5;border-radius:4px;margin-top:4px}
.bar div{height:8px;border-radius:4px;background:linear-gradient(90deg,#d9534f,#f0ad4e,#5cb85c)}
.score{font-weight:600;font-size:14px}
table.errors{border-collapse:collapse;margin-top:8px}
.errors td{border-top:1px solid #ddd;padding:4px 8px;font-size:13px}
.spread{font-weight:400;color:#666;font-size:12px}
.card.mapped{width:472px} .card.mapped .pics{display:flex;gap:12px;align-items:flex-start} .card.mapped a{display:block}
.card.mapped a.map img{width:300px;height:auto;max-height:240px;min-height:40px}
.legend{font-size:13px;line-height:22px;color:#444;margin:0 0 12px} .legend .scale{white-space:nowrap}
.legend .ramp{display:inline-block;width:240px;height:14px;margin:0 6px;border:1px solid #bbb;vertical-align:middle}
dl.provenance{display:grid;grid-template-columns:max-content auto;gap:2px 16px;font-size:12px;margin:8px 0}
.provenance dt{color:#666} .provenance dd{margin:0;word-break:break-all}
"""


EXTRA_COLUMNS = (MOS_COLUMN, CALIBRATED_COLUMN)  # shown on a card when the rows have them


@dataclass
class _Shown:
    """A row the page may show: its position among the rows fed (ties in score keep input order) and its columns."""

    position: int
    path: str
    score: float
    scene: str
    crops: str
    thumbnail: str | None = None
    spread: float | None = None  # with details: the crops' standard deviation
    levels: tuple[float, ...] | None = None  # with details: the head's level probabilities, worst first
    extra: tuple[tuple[str, float], ...] = ()  # the extra columns asked for (mos, calibrated), in order
    map: str | None = None  # with maps: the URL of its quality map's PNG, relative to the page


def thumbnail(source: Any) -> str | None:
    """A base64 JPEG of an image, shrunk to fit THUMB_SIDE x THUMB_SIDE pixels; None when it cannot be made.

    Args:
        source: a file path (decoded as for scoring: EXIF orientation, RGB), a PIL image, a uint8 (H, W, 3) array or a
            float (3, H, W) tensor in [0, 1].
    """
    try:
        if isinstance(source, (str, Path, bytes)):  # bytes: a stream read whole (standard input)
            image = load_image(source)
        elif isinstance(source, Image.Image):
            image = to_rgb(source)
        elif isinstance(source, torch.Tensor):
            pixels = (source.detach().cpu().float().clamp(0, 1) * 255).round().byte()  # (3, H, W)
            image = Image.fromarray(pixels.permute(1, 2, 0).numpy())
        else:
            image = to_rgb(Image.fromarray(np.asarray(source)))
        image.thumbnail((THUMB_SIDE, THUMB_SIDE))
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=80)
    except Exception:  # the page still shows the row, with an empty frame: the file changed or went since scoring
        return None
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _number(value: Any) -> float | None:
    """A score column's value as a float; None for an empty one (a CSV's "" or JSON's null)."""
    return None if value is None or value == "" else float(value)


class Report:
    """The HTML page of a run, fed row by row; memory stays about 2 x `top` rows plus `ERRORS_SHOWN` failures."""

    def __init__(self, top: int = DEFAULT_TOP) -> None:
        """An empty report showing at most the `top` best and `top` worst images.

        Raises:
            ValueError: `top` below 1 (names the `html_top` parameter of `run_score`).
        """
        if top < 1:
            raise ValueError(f"`html_top` must be >= 1, got {top}")
        self.top = top
        self.scored = 0
        self.failed = 0
        # Min-heaps whose first item is the next to drop: _best keys (score, -position), _worst (-score, position).
        self._best: list[tuple[float, int, _Shown]] = []
        self._worst: list[tuple[float, int, _Shown]] = []
        self._errors: list[tuple[str, str]] = []
        self._fed = 0

    def add(self, row: ScoreRow | Mapping[str, Any]) -> None:
        """Count one row and keep it if the page may show it.

        Args:
            row: a ScoreRow, or a mapping of its columns (a row read back from a csv or jsonl output file).
        """
        values = row.as_dict() if isinstance(row, ScoreRow) else row
        position, self._fed = self._fed, self._fed + 1
        if values.get("error"):
            self.failed += 1
            if len(self._errors) < ERRORS_SHOWN:
                self._errors.append((str(values["path"]), str(values["error"])))
            return
        score = _number(values.get("score"))
        if score is None:
            return
        self.scored += 1
        shown = _Shown(position, str(values["path"]), score, str(values.get("scene") or ""), str(values.get("crops")))
        shown.spread = _number(values.get("spread"))
        levels = [_number(values.get(f"p_{name}")) for name in LEVEL_NAMES]
        shown.levels = None if None in levels else tuple(levels)
        extra = ((k, _number(values.get(k))) for k in EXTRA_COLUMNS)
        shown.extra = tuple((k, v) for k, v in extra if v is not None)
        for heap, key in ((self._best, (score, -position)), (self._worst, (-score, position))):
            if len(heap) < self.top:
                heapq.heappush(heap, (*key, shown))
            elif key > heap[0][:2]:
                heapq.heapreplace(heap, (*key, shown))

    def names(self) -> set[str]:
        """The paths of the images the page shows (their thumbnails are made from these)."""
        return {s.path for _, _, s in self._best + self._worst}

    def _sections(self) -> list[tuple[str, list[_Shown]]]:
        """(heading, rows best first) of each grid: one of every image, or the best and the worst."""

        def ranked(heap: list[tuple[float, int, _Shown]]) -> list[_Shown]:
            unique = {s.position: s for _, _, s in heap}  # a row can be in both heaps
            return sorted(unique.values(), key=lambda s: (-s.score, s.position))

        if self.scored <= 2 * self.top:  # the two heaps hold every scored row
            return [("", ranked(self._best + self._worst))]
        return [(f"The {self.top} best", ranked(self._best)), (f"The {self.top} worst", ranked(self._worst))]

    def _summary(self) -> str:
        """The sentence saying what the page shows."""
        if self.scored <= 2 * self.top:
            return f"Every scored image, best first ({self.scored})."
        return (
            f"The {self.top} best and the {self.top} worst of {self.scored:,} scored images (set the number with "
            "--html-top); the output file holds every row."
        )

    def _errors_html(self) -> str:
        """The failures table, and how many more the output file holds."""
        if not self.failed:
            return ""
        cells = "".join(
            f"<tr><td>{html.escape(shown_name(p))}</td><td>{html.escape(shown_name(e))}</td></tr>"
            for p, e in self._errors
        )
        more = self.failed - len(self._errors)
        note = f"<p class='meta'>and {more:,} more: see the output file</p>" if more else ""
        return f"<h2>Errors</h2><table class='errors' id='errors'>{cells}</table>{note}"

    def write(
        self,
        path: str | Path,
        *,
        model: str,
        score_range: tuple[float, float],
        sources: Mapping[str, Any] | None = None,
        provenance: Mapping[str, Any] | None = None,
        maps: Mapping[str, str | Path] | None = None,
        map_scale: str = "auto",
    ) -> Path:
        """Write the page to `path`, UTF-8; returns the path.

        Args:
            path: the HTML file written.
            model: the model's name, in the heading.
            score_range: (low, high) of the model's scores: the ends of the bars.
            sources: what each shown path is read from for its thumbnail (see `names`); a path missing from it is read
                as a file of that name.
            provenance: the run's provenance record (outputs/provenance.py), listed at the end.
            maps: {path: its quality map's PNG file} (outputs/maps.py); each shown beside its image, linked by a
                relative URL rather than embedded, so the page stays small (keep the files beside it).
            map_scale: the colour scale the maps were drawn on (`render_map`), which the legend above the cards
                names: "fixed" (one 0..1 scale, drawn as a colour ramp) or "auto" (each map its own range).
        """
        sources = {} if sources is None else sources
        lo, hi = score_range
        grids = []
        for heading, shown in self._sections():
            for s in shown:
                s.thumbnail = thumbnail(sources.get(s.path, s.path))
                s.map = _map_url(maps, s.path, Path(path))
            title = f"<h2>{heading}</h2>" if heading else ""
            grids.append(f"{title}<div class='grid'>{''.join(_card(s, lo, hi) for s in shown)}</div>")
        page = (
            "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"{PAGE_MARK}<style>{_STYLE}</style></head><body>"
            f"<h1>gamma-iqa scores</h1><p class='meta'>model {html.escape(model)} · {self.scored:,} scored · "
            f"{self.failed:,} failed · higher is better</p>"
            f"<p class='meta' id='shown'>{html.escape(self._summary())}</p>{_legend_html(bool(maps), map_scale)}"
            f"<div id='scored'>{''.join(grids)}</div>{self._errors_html()}{_provenance_html(provenance)}"
            "</body></html>\n"
        )
        path = Path(path)
        path.write_text(page, encoding="utf-8")
        return path


def _legend_html(mapped: bool, scale: str) -> str:
    """The maps' legend: their colours on the fixed scale (a ramp from 0 to 1), or that each has its own range."""
    if not mapped:
        return ""
    if scale == "fixed":
        ramp = f'<span class="ramp" style="background:linear-gradient(90deg,{",".join(MAP_COLOURS)})"></span>'
        what = (
            f"<b>Quality maps</b> (beside each image): the score of each window, one colour scale for every map: "
            f"<span class='scale'>0{ramp}1</span> (red low, green high). Click a map to open it full size."
        )
    else:
        what = (
            "<b>Quality maps</b> (beside each image): each on its own colour scale, its lowest to highest window "
            "score, so a colour means a different score on each map (--map-scale fixed puts them on one). Click a "
            "map to open it full size with its colour bar."
        )
    return f"<p class='legend' id='map-legend'>{what}</p>"


def _map_url(maps: Mapping[str, str | Path] | None, name: str, page: Path) -> str | None:
    """The URL of `name`'s quality map relative to the page's folder (percent-encoded); None without one."""
    if not maps or name not in maps:
        return None
    relative = os.path.relpath(Path(maps[name]).resolve(), page.resolve().parent)
    return urllib.parse.quote(Path(relative).as_posix())


def _card(s: _Shown, lo: float, hi: float) -> str:
    """One image's card: thumbnail (and its map, linked), path, score and its bar, scene and crops, extra columns."""
    width = 100.0 * min(1.0, max(0.0, (s.score - lo) / (hi - lo)))
    img = f'<img alt="" src="data:image/jpeg;base64,{s.thumbnail}">' if s.thumbnail else "<img alt=''>"
    if s.map is not None:
        link = f'<a class="map" href="{html.escape(s.map)}"><img alt="quality map" src="{html.escape(s.map)}"></a>'
        img = f'<div class="pics">{img}{link}</div>'
    spread = f' <span class="spread">± {s.spread:.4f}</span>' if s.spread is not None else ""
    extra = " · ".join(f"{k} {v:.4g}" for k, v in s.extra)
    if s.levels is not None:  # the level mix, as percentages worst first: "bad 2 · poor 10 · ..."
        mix = " ".join(f"{name} {100 * p:.0f}%" for name, p in zip(LEVEL_NAMES, s.levels, strict=True))
        extra = f"{extra}<br>{mix}" if extra else mix
    extra = f'<div class="scene extra">{extra}</div>' if extra else ""
    return (
        f'<div class="card{" mapped" if s.map else ""}" data-score="{s.score:.6f}">{img}'
        f'<div class="path">{html.escape(shown_name(s.path))}</div>'
        f'<div class="score">{s.score:.4f}{spread}</div><div class="bar"><div style="width:{width:.1f}%"></div></div>'
        f'<div class="scene">{html.escape(s.scene)} · crops {html.escape(s.crops)}</div>{extra}</div>'
    )


def _flatten(record: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, value as text) of a nested record, in its order; a list of files as one line per file."""
    out = []
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out += _flatten(value, name + ".")
        elif isinstance(value, list) and value and isinstance(value[0], Mapping):
            out += [(name, " ".join(f"{k}={v}" for k, v in item.items())) for item in value]
        elif isinstance(value, list):
            out.append((name, " ".join(map(str, value))))
        else:
            out.append((name, "" if value is None else str(value)))
    return out


def _provenance_html(record: Mapping[str, Any] | None) -> str:
    """The provenance section: one term per (dotted) key, a list rather than a table; nothing without a record."""
    if not record:
        return ""
    items = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(shown_name(v))}</dd>" for k, v in _flatten(record))
    return f"<h2>Provenance</h2><dl class='provenance' id='provenance'>{items}</dl>"


def write_html(
    rows: Iterable[ScoreRow | Mapping[str, Any]],
    path: str | Path,
    *,
    model: str,
    score_range: tuple[float, float],
    top: int = DEFAULT_TOP,
    sources: Mapping[str, Any] | None = None,
) -> Path:
    """Write the report of `rows` to `path` (see `Report`); returns the path.

    Raises:
        ValueError: `top` below 1.
    """
    report = Report(top)
    for row in rows:
        report.add(row)
    return report.write(path, model=model, score_range=score_range, sources=sources)
