"""benchmarks/side_by_side.py: run choice, split reuse, resuming, the table, failures, and one real run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import load_script, write_dataset

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "side_by_side.py"
GENRES = ["Action", "Comedy", "Drama"]
# Every non-empty combination of the three genres in turn, so each genre has positives and negatives on the
# test side; 60 posters leave 12 test posters, enough for the --quick floor of 3 test positives and negatives.
LABELS = {f"tt{k:07d}": [g for j, g in enumerate(GENRES) if (k % 7 + 1) >> j & 1] for k in range(60)}


@pytest.fixture(scope="module")
def bench():
    return load_script(SCRIPT)


def fake_run(run: Path, macro_auc: float = 0.7, prevalence_ap: float = 0.2, split: str = "id,split\n") -> Path:
    """A run folder holding a metrics.json with the figures the table reads, and a split.csv."""
    run.mkdir(parents=True)
    metrics = {
        "macro_roc_auc": macro_auc,
        "macro_average_precision": 0.3,
        "micro_roc_auc": 0.8,
        "n_samples": 12,
        "genres_in_macro": GENRES,
        "baselines": {
            "prevalence": {"macro_roc_auc": 0.5, "macro_average_precision": prevalence_ap, "micro_roc_auc": 0.6}
        },
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "split.csv").write_text(split)
    return run


def test_select_runs_keeps_training_order(bench):
    """Check that --runs picks the named runs in training order, lite0 (whose split the others reuse) first."""
    chosen = bench.select_runs(bench.run_specs(), "default, lite0")
    assert list(chosen) == ["lite0", "default"]
    assert list(bench.select_runs(bench.run_specs(), None)) == [
        "lite0",
        "per-genre",
        "mobilenet_v2",
        "lite2",
        "custom_cnn",
        "default",
        "ensemble",
        "ensemble+text",
    ]


def test_unknown_run_is_named_with_the_choices(bench):
    """Check that an unknown --runs name is refused, naming it and the valid names."""
    with pytest.raises(ValueError, match=r"unknown run\(s\) lite9; expected .* of lite0,per-genre,mobilenet_v2"):
        bench.select_runs(bench.run_specs(), "lite0,lite9")


def test_run_specs_are_image_only_but_the_default(bench):
    """Check that every run but the default and the ensemble with text is image only, that the two
    ensemble runs share their backbones, and that --cnn-epochs caps only the custom CNN."""
    specs = bench.run_specs(cnn_epochs=3)
    with_text = {"default", "ensemble+text"}
    assert all("--no-text" in args for name, args in specs.items() if name not in with_text)
    assert not any("--no-text" in specs[name] for name in with_text)
    assert specs["default"] == []
    assert specs["ensemble"] == [*specs["ensemble+text"], "--no-text"]
    assert specs["custom_cnn"][specs["custom_cnn"].index("--epochs") + 1] == "3"
    assert specs["per-genre"][2:4] == ["--mode", "per-genre"]
    assert sum("--epochs" in args for args in specs.values()) == 1


def test_later_runs_reuse_the_first_finished_runs_split(bench, tmp_path):
    """Check that no --split is passed before a run finishes, then WORK/split.csv, the first finished run's."""
    assert "--split" not in bench.train_arguments(["DATA"], ["--no-text"], tmp_path, quick=False)
    bench.keep_split(tmp_path, fake_run(tmp_path / "a", split="first\n"))
    bench.keep_split(tmp_path, fake_run(tmp_path / "b", split="second\n"))
    assert (tmp_path / "split.csv").read_text() == "first\n"
    arguments = bench.train_arguments(["DATA"], ["--no-text"], tmp_path, quick=True)
    assert arguments == ["DATA", "--no-text", "--split", str(tmp_path / "split.csv"), "--min-test-positives", "3"]


def test_finished_run_is_reused_without_training(bench, tmp_path, monkeypatch):
    """Check that a run folder holding metrics.json, trained with the same arguments, is reused with its time."""
    monkeypatch.setattr(bench.core_targets, "timed_run", lambda *a: pytest.fail("a finished run was trained again"))
    fake_run(tmp_path / "lite0", macro_auc=0.75)
    bench.save_record(tmp_path, "lite0", ["--no-text"], 12.34)
    result = bench.train_run("lite0", ["--no-text"], ["DATA"], tmp_path, tmp_path / "cache", quick=False)
    assert result.reused and result.seconds == 12.3 and result.metrics["macro_roc_auc"] == 0.75
    assert (tmp_path / "split.csv").is_file()


@pytest.mark.parametrize("interrupted", [True, False], ids=["no-metrics", "other-arguments"])
def test_unfinished_or_changed_run_is_trained_again(bench, tmp_path, monkeypatch, interrupted):
    """Check that a folder without metrics.json, or one trained with other arguments, is cleared and retrained."""
    run = fake_run(tmp_path / "custom_cnn")
    (run / "stale.txt").write_text("from the earlier run")
    if interrupted:
        (run / "metrics.json").unlink()
    else:
        bench.save_record(tmp_path, "custom_cnn", ["--epochs", "8"], 99.0)

    def fake_train(command, env):
        assert not run.exists(), "the earlier folder must be gone before training"
        fake_run(run, macro_auc=0.6)
        return 5.0, 100, "trained\n"

    monkeypatch.setattr(bench.core_targets, "timed_run", fake_train)
    result = bench.train_run("custom_cnn", ["--epochs", "3"], ["DATA"], tmp_path, tmp_path / "cache", quick=False)
    assert not result.reused and result.seconds == 5.0 and result.metrics["macro_roc_auc"] == 0.6
    assert bench.load_records(tmp_path)["custom_cnn"] == {"arguments": ["--epochs", "3"], "seconds": 5.0}


def test_table_shows_each_run_failures_and_the_baseline(bench, tmp_path):
    """Check that the table has a row per run (FAILED, reused marked earlier) and the prevalence baseline."""
    results = [
        bench.RunResult("lite0", tmp_path / "lite0", 10.0, json.loads(fake_run(tmp_path / "lite0").joinpath(
            "metrics.json").read_text())),
        bench.RunResult("lite2", tmp_path / "lite2", None, {"macro_roc_auc": 0.71}, reused=True),
        bench.RunResult("custom_cnn", tmp_path / "custom_cnn", error="exit 1: postergenre train"),
    ]  # fmt: skip
    rows = bench.table_rows(results)
    assert rows[0] == ["run", "wall s", "macro AUC", "macro AP", "micro AUC", "genres"]
    assert rows[1] == ["lite0", "10.0", "0.700", "0.300", "0.800", "3"]
    assert rows[2][:3] == ["lite2", "? (earlier)", "0.710"] and rows[2][3] == "n/a"
    assert rows[3][:2] == ["custom_cnn", "FAILED"]
    assert rows[4] == ["prevalence baseline", "-", "0.500", "0.200", "0.600", ""]
    table = bench.format_table(rows)
    assert len({len(line) for line in table.splitlines()}) == 1, "every line of the table is equally wide"


def test_a_run_on_another_test_set_is_warned_about(bench, tmp_path):
    """Check that a run whose prevalence baseline differs from the first's is named with the remedy."""
    results = [
        bench.RunResult(name, run, 1.0, json.loads((run / "metrics.json").read_text()))
        for name, run in (
            ("lite0", fake_run(tmp_path / "lite0")),
            ("mobilenet_v2", fake_run(tmp_path / "mobilenet_v2")),
            ("lite2", fake_run(tmp_path / "lite2", prevalence_ap=0.25)),
        )
    ]
    (warning,) = bench.baseline_warnings(results)
    assert warning.startswith("warning: lite2's prevalence baseline differs from lite0's")
    assert f"delete {tmp_path / 'lite2'} and rerun" in warning


def test_work_folder_of_another_dataset_is_refused(bench, tmp_path):
    """Check that resuming in a WORK folder trained on another dataset or --quick names the file and the fix."""
    bench.check_settings(tmp_path, {"data": "/a", "quick": None})
    bench.check_settings(tmp_path, {"data": "/a", "quick": None})
    with pytest.raises(ValueError, match=r"benchmark\.json: the runs in .* were trained with .*pass another --work"):
        bench.check_settings(tmp_path, {"data": "/a", "quick": 150})


def test_main_skips_without_the_dataset(bench, tmp_path, monkeypatch, capsys):
    """Check that the benchmark skips with a message naming the folder when train.csv is absent."""
    monkeypatch.setattr(sys, "argv", ["side_by_side.py", "--data", str(tmp_path), "--work", str(tmp_path / "w")])
    assert bench.main() == 0
    assert f"skipped: no dataset at {tmp_path} (no train.csv)" in capsys.readouterr().out


@pytest.mark.slow
def test_real_run_failure_compare_and_resume(bench, tmp_path, monkeypatch, capsys):
    """Check end to end, on tiny posters: one real train, a failing run reported while the other goes on,
    the comparison written, and a rerun that reuses the finished run."""
    data = write_dataset(tmp_path / "tiny", LABELS, GENRES)
    work = tmp_path / "work"
    specs = {"lite0": ["--no-text", "--epochs", "3"], "broken": ["--no-text", "--backbone", "nope"]}
    monkeypatch.setattr(bench, "run_specs", lambda cnn_epochs=8: specs)
    argv = ["side_by_side.py", "--data", str(data), "--work", str(work), "--quick", "60"]

    monkeypatch.setattr(sys, "argv", argv)
    assert bench.main() == 1
    out = capsys.readouterr().out
    assert "broken FAILED: exit 2" in out and "unknown backbone 'nope'" in out
    (row,) = [line for line in out.splitlines() if line.startswith("| lite0 ")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert float(cells[1]) > 0 and 0 <= float(cells[2]) <= 1
    assert "| broken " in out and "FAILED" in out.split("| broken ")[1].splitlines()[0]
    assert (work / "compare" / "compare.png").is_file() and (work / "compare" / "compare.csv").is_file()
    assert (work / "split.csv").read_text() == (work / "lite0" / "split.csv").read_text()

    monkeypatch.setattr(sys, "argv", [*argv, "--runs", "lite0"])
    assert bench.main() == 0
    out = capsys.readouterr().out
    assert f"lite0: reused {work / 'lite0'}" in out and f"{cells[1]} (earlier)" in out
