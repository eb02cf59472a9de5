"""What a one-image `gamma-iqa score` imports: none of the heavy optional libraries (scipy, sympy, matplotlib), whose
import times (over a second each here) would dominate the default model's own work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "grace_hopper.jpg"


def test_scoring_one_photo_with_the_default_model_imports_no_heavy_library():
    code = (
        "import sys\n"
        "from gamma_iqa.cli import main\n"
        f"code = main(['score', {str(EXAMPLE)!r}, '--workers', '0'])\n"
        "heavy = sorted(m for m in ('scipy', 'sympy', 'matplotlib', 'pandas') if m in sys.modules)\n"
        "print('heavy:', heavy, code, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert "heavy: [] 0" in done.stderr, done.stderr
    assert done.stdout.splitlines()[0].startswith("path,score")  # it did score
