"""The `>>>` examples in the docstrings of the public entry points run, and give what they show."""

from __future__ import annotations

import doctest
import importlib
import io

import pytest

# Modules whose examples run here, and the functions that must have at least one (the README points users to them).
MODULES = {
    "gamma_iqa.models.factory": ["create_model"],
    "gamma_iqa.models.base": ["QualityModel.score"],
    "gamma_iqa.models.loss": ["QualityLoss"],
    "gamma_iqa.metrics": ["srcc", "plcc"],
    "gamma_iqa.engine.maps": ["quality_map"],
}
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def examples(module_name: str) -> list[doctest.DocTest]:
    """The docstring tests of one module (its own objects only) that hold at least one example."""
    module = importlib.import_module(module_name)
    return [t for t in doctest.DocTestFinder().find(module) if t.examples]


@pytest.mark.parametrize("module_name", sorted(MODULES))
def test_examples_give_what_they_show(module_name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an example that writes a file writes it here
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report = io.StringIO()
    for test in examples(module_name):
        runner.run(test, out=report.write)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, report.getvalue()


@pytest.mark.parametrize("name", [f"{m}.{f}" for m, fs in sorted(MODULES.items()) for f in fs])
def test_each_entry_point_has_an_example(name):
    module_name = next(m for m in MODULES if name.startswith(f"{m}."))
    counts = {t.name: len(t.examples) for t in examples(module_name)}
    assert counts.get(name, 0) >= 1, f"{name} has no >>> example (examples found: {counts or 'none'})"
