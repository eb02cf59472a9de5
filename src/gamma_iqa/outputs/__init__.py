"""The outputs layer: row writers with resume, the HTML report, plots and result tables. Builds on the engine.

`open_rows` writes score rows (csv, jsonl, json) as they finish, with resume; `run_score` and `run_eval` are the runs
behind `gamma-iqa score` and `gamma-iqa eval`.
"""

from .runs import run_eval, run_score
from .writers import RowWriter, open_rows

__all__ = ["RowWriter", "open_rows", "run_eval", "run_score"]
