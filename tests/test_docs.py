"""The docs tell the truth: documented defaults against the code, and the README's tour as written.

What a newcomer reads first must not rot: each check here compares a number or name printed in
the docs with the code that decides it, and the tour's Python blocks run (at a small size).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DOCS = {p.name: p.read_text() for p in (ROOT / "docs").glob("*.md")}


def _python_block(after_heading: str) -> str:
    """The first ```python block under the README heading ``after_heading``."""
    start = README.index(after_heading)
    match = re.search(r"```python\n(.*?)```", README[start:], re.S)
    assert match, f"no python block under {after_heading!r}"
    return match.group(1)


def test_python_versions_agree_with_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    low = re.match(r">=(\d+\.\d+)", project["requires-python"]).group(1)
    high = int(re.search(r"<3\.(\d+)", project["requires-python"]).group(1)) - 1
    assert f"Python {low}–3.{high}" in README
    classifiers = {c.rsplit(" ", 1)[-1] for c in project["classifiers"] if "Python :: 3." in c}
    assert classifiers == {f"3.{m}" for m in range(int(low.split(".")[1]), high + 1)}


def test_noise2inverse_steps_are_the_documented_default() -> None:
    from bluesky_lowdose.model.n2i import N2I_DEFAULTS
    from bluesky_lowdose.pipeline import N2I_OPTIONS

    steps = N2I_OPTIONS.get("steps", N2I_DEFAULTS["steps"])
    assert f"(default `pipeline.N2I_OPTIONS`: {steps})" in DOCS["dxchange.md"]
    batch = N2I_OPTIONS.get("batch_size", N2I_DEFAULTS["batch_size"])
    assert re.search(rf"batch {batch}, {steps} steps", DOCS["model.md"])
    assert (N2I_DEFAULTS["batch_size"], N2I_DEFAULTS["steps"]) == (batch, steps)


def test_the_default_method_is_auto_everywhere_it_is_written() -> None:
    import argparse

    from bluesky_lowdose.beamline import BeamlineConfig
    from bluesky_lowdose.callbacks import ProjectionEnhancer
    from bluesky_lowdose.dxchange.cli import configure_parser
    from bluesky_lowdose.pipeline import enhance_scan

    parser = configure_parser(argparse.ArgumentParser())
    assert parser.get_default("method") == "auto"
    assert BeamlineConfig().method == "auto"
    import inspect

    assert inspect.signature(ProjectionEnhancer).parameters["method"].default == "auto"
    assert inspect.signature(enhance_scan).parameters["method"].default == "auto"
    assert "| `auto` (default) |" in DOCS["dxchange.md"]
    assert "--method M` | `auto` (default)" in DOCS["dxchange.md"]
    assert re.search(
        r"``LOWDOSE_METHOD``\s+pipeline method of the enhancer \(``auto``",
        (ROOT / "bluesky_lowdose" / "beamline.py").read_text(),
    )


def test_documented_epics_shutter_states_are_what_plan_kwargs_gives() -> None:
    source = (ROOT / "bluesky_lowdose" / "devices" / "epics.py").read_text()
    opened = re.search(r'shutter_open="(\w+)"', source).group(1)
    closed = re.search(r'shutter_close="(\w+)"', source).group(1)
    assert f"shutter_open='{opened}', shutter_close='{closed}'" in DOCS["plans.md"]


def test_every_readme_section_the_docs_name_exists() -> None:
    headings = {h.strip() for h in re.findall(r"^#+ (.+)$", README, re.M)}
    for name, text in DOCS.items():
        for section in re.findall(r'README, "([^"]+)"', text):
            assert any(h.startswith(section) for h in headings), (name, section, sorted(headings))


@pytest.mark.tiled
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_readme_tour_in_a_script_and_results_from_tiled_run_as_written(tmp_path, monkeypatch) -> None:
    """README's "In a script" block, then its "Results from Tiled" block against what it made.

    Replaced, and only these: the size and angle count (a test-sized scan), the data directory
    (a temporary one), the port (the one the script's server got) and ``auto``'s budget (the
    choice itself is tested in ``test_quality``).
    """
    script = _python_block("### In a script")
    results = _python_block("### Results from Tiled")
    small = {
        "size=128": "size=32",
        "num_angles=181": "num_angles=31, reference_angles=(0.0, 60.0, 120.0), num_darks=2, num_flats=2",
        '"lowdose-data"': repr(str(tmp_path / "lowdose-data")),
        "progress=True)": "progress=False, auto_options={'budget_s': 20})",
    }
    for old, new in small.items():
        assert old in script, old
        script = script.replace(old, new)
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    try:
        exec(compile(script, "README.md (In a script)", "exec"), ns)
        assert ns["enhancer"].wait(timeout=1)  # the block itself waited
        monkeypatch.setenv("TILED_API_KEY", ns["server"].api_key)
        port = ns["server"].uri.rsplit(":", 1)[1].split("/")[0]
        assert "http://127.0.0.1:8000" in results
        results = results.replace("http://127.0.0.1:8000", f"http://127.0.0.1:{port}")
        exec(compile(results, "README.md (Results from Tiled)", "exec"), ns)
        assert ns["volume"].shape == (32, 32, 32)
        assert ns["proc"].metadata["stop"]["exit_status"] == "success"
    finally:
        if "server" in ns:
            ns["server"].close()
