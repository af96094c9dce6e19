"""benchmarks/core_targets.py: where it keeps its runs and caches."""

from __future__ import annotations

import sys
from pathlib import Path

from conftest import load_script, write_dataset

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "core_targets.py"


def test_work_folder_must_be_empty_so_that_cold_runs_start_cold(tmp_path, monkeypatch, capsys):
    """Check --work refuses a folder that already holds something (an old cache would make the cold runs
    warm), names it, and runs nothing."""
    bench = load_script(SCRIPT)
    data = write_dataset(tmp_path / "data", {"tt0000001": ["Drama"]}, ["Drama"])
    work = tmp_path / "work"
    (work / "cache").mkdir(parents=True)

    def no_run(*args):
        raise AssertionError("a pipeline ran")

    monkeypatch.setattr(bench, "pipeline_figures", no_run)
    monkeypatch.setattr(sys, "argv", ["core_targets.py", "--data", str(data), "--work", str(work)])

    assert bench.main() == 2
    assert f"--work {work}: expected an empty or absent folder" in capsys.readouterr().out
