"""A self-contained HTML page of scored images: thumbnails embedded, best first, with a bar per score and the errors."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from ..engine.scoring import ScoreRow

__all__ = ["write_html"]

_STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 4px} p.meta{color:#666;margin:0 0 16px}
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
"""


def _card(row: ScoreRow, lo: float, hi: float) -> str:
    width = 100.0 * min(1.0, max(0.0, (row.score - lo) / (hi - lo))) if row.score is not None else 0.0
    img = f'<img alt="" src="data:image/jpeg;base64,{row.thumbnail}">' if row.thumbnail else "<img alt=''>"
    return (
        f'<div class="card" data-score="{row.score:.6f}">{img}'
        f'<div class="path">{html.escape(row.path)}</div>'
        f'<div class="score">{row.score:.4f}</div><div class="bar"><div style="width:{width:.1f}%"></div></div>'
        f'<div class="scene">{html.escape(str(row.scene))} · crops {html.escape(str(row.crops))}</div></div>'
    )


def write_html(rows: Sequence[ScoreRow], path: str | Path, *, model: str, score_range: tuple[float, float]) -> Path:
    """Write the report to `path`: scored images sorted by score (best first), then a table of the failures."""
    scored = sorted((r for r in rows if r.error is None), key=lambda r: (-r.score, r.index))
    failed = [r for r in rows if r.error is not None]
    lo, hi = score_range
    cards = "\n".join(_card(r, lo, hi) for r in scored)
    errors = "".join(f"<tr><td>{html.escape(r.path)}</td><td>{html.escape(r.error or '')}</td></tr>" for r in failed)
    page = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>gamma-iqa scores</title><style>{_STYLE}</style></head><body>"
        f"<h1>gamma-iqa scores</h1><p class='meta'>model {html.escape(model)} · {len(scored)} scored · "
        f"{len(failed)} failed · higher is better</p>"
        f"<div class='grid' id='scored'>{cards}</div>"
        + (f"<h2>Errors</h2><table class='errors' id='errors'>{errors}</table>" if failed else "")
        + "</body></html>\n"
    )
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path
