"""End to end: the dry run on input_stub, determinism, and one-line errors from the command line."""
import json
import math

import numpy as np
import pandas as pd

from kaggle_src import pipeline
from kaggle_src.ensembles import OPTIONS
from kaggle_src.pipeline import main
from make_stub import TEST_ANSWERS
from tests.conftest import INPUT_STUB

SAMPLE = INPUT_STUB / "dog-breed-identification" / "sample_submission.csv"


def test_submission_matches_sample_submission_exactly(dry_run):
    submission = pd.read_csv(dry_run / "submission.csv")
    sample = pd.read_csv(SAMPLE)
    assert list(submission.columns) == list(sample.columns)
    assert submission["id"].tolist() == sample["id"].tolist()
    values = submission.iloc[:, 1:].to_numpy()
    assert np.isfinite(values).all() and (values >= 0).all()
    np.testing.assert_allclose(values.sum(axis=1), 1, atol=1e-5)


def test_test_rows_carry_their_own_images_predictions(dry_run):
    """Scored against the stub's hidden test breeds: a shuffled id or column would be near chance."""
    submission = pd.read_csv(dry_run / "submission.csv").set_index("id")
    answers = pd.read_csv(INPUT_STUB / TEST_ANSWERS).set_index("id").loc[submission.index, "breed"]
    rows = np.arange(len(submission))
    columns = submission.columns.get_indexer(answers)
    test_log_loss = -np.log(submission.to_numpy()[rows, columns]).mean()
    assert test_log_loss < 0.25 * math.log(120)
    assert (submission.to_numpy().argmax(axis=1) == columns).mean() > 0.8


def test_metrics_hold_the_cv_scores_counts_times_and_config(dry_run):
    metrics = json.loads((dry_run / "metrics.json").read_text())
    assert set(metrics["oof"]) == {"original", "flipped", "ensemble"}
    assert list(metrics["options"]) == [option.name for option in OPTIONS]
    best = min(metrics["options"], key=lambda name: metrics["options"][name]["log_loss"])
    assert metrics["chosen"]["option"] == best
    assert metrics["oof"]["ensemble"] == {key: metrics["options"][best][key] for key in ("log_loss", "accuracy")}
    improvement = metrics["options"]["seed"]["log_loss"] - metrics["oof"]["ensemble"]["log_loss"]
    assert metrics["chosen"]["improvement_over_seed"] == improvement >= 0
    assert 0 < metrics["options"]["tta_geometric_temperature"]["temperature"] < 20
    assert 1 <= len(metrics["confused"]) <= 10
    assert len(metrics["folds"]) == 10
    assert {(row["fold"], row["view"]) for row in metrics["folds"]} == {
        (fold, view) for fold in range(5) for view in ("original", "flipped")
    }
    assert metrics["counts"] == {
        "train_images": 720, "test_images": 120, "classes": 120, "folds": 5, "views": 2, "heads": 10, "features": 4096,
    }
    assert set(metrics["seconds"]) == {
        "find_inputs", "load_images", "extract_features", "train_heads", "train_logistic", "predict", "ensembles",
        "write", "total",
    }
    assert metrics["config"]["dry_run"] is True and metrics["config"]["image_size"] == 96
    assert metrics["chance_log_loss"] == math.log(120)
    # Far below chance: ids, labels and features stayed aligned through folds and views.
    assert metrics["oof"]["ensemble"]["log_loss"] < 0.25 * math.log(120)
    for row in metrics["folds"]:
        assert row["log_loss"] < 0.5 * math.log(120) and 1 <= row["epochs"] <= 50


def test_report_holds_the_cv_table_the_winner_and_the_confused_pairs(dry_run):
    metrics = json.loads((dry_run / "metrics.json").read_text())
    report = (dry_run / "report.md").read_text()
    for name, scores in metrics["options"].items():
        shown = f"**{name}** (submitted)" if name == metrics["chosen"]["option"] else name
        assert f"| {shown} |" in report and f"| {scores['log_loss']:.4f} | {scores['accuracy']:.4f} |" in report
    assert f"Submitted: **{metrics['chosen']['option']}**" in report
    for pair in metrics["confused"]:
        assert f"| {' / '.join(pair['breeds'])} | {pair['count']} |" in report
    assert "| extract_features |" in report and "| train_logistic |" in report


def test_the_chosen_options_test_predictions_are_submitted(small_stub, tmp_path, monkeypatch):
    """Whatever option is chosen (here the last, logistic, not the best), its test predictions are submitted."""
    chosen = []
    monkeypatch.setattr(pipeline, "choose", lambda options: chosen.append(options[-1]) or options[-1])
    quick = ["--dry-run", "--image-size", "75", "--max-epochs", "5", "--input-root", str(small_stub)]
    assert main([*quick, "--output-dir", str(tmp_path)]) == 0
    assert chosen[0].option.name == "logistic"
    assert json.loads((tmp_path / "metrics.json").read_text())["chosen"]["option"] == "logistic"
    submission = pd.read_csv(tmp_path / "submission.csv").set_index("id").to_numpy()
    np.testing.assert_allclose(submission, chosen[0].test / chosen[0].test.sum(axis=1, keepdims=True), rtol=1e-6)


def test_without_flips_or_logistic_regressions_their_options_are_left_out(small_stub, tmp_path):
    quick = ["--dry-run", "--image-size", "75", "--max-epochs", "2", "--input-root", str(small_stub)]
    assert main([*quick, "--output-dir", str(tmp_path), "--no-flips", "--no-logistic"]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert list(metrics["options"]) == ["seed", "geometric"]
    assert "train_logistic" not in metrics["seconds"] and len(metrics["folds"]) == 5


def test_same_seed_same_submission_and_unknown_arguments_are_ignored(small_stub, tmp_path, capsys):
    quick = ["--dry-run", "--image-size", "75", "--max-epochs", "5", "--input-root", str(small_stub)]
    assert main([*quick, "--output-dir", str(tmp_path / "a"), "-f", "/tmp/kernel.json"]) == 0
    assert "ignoring unknown arguments: -f /tmp/kernel.json" in capsys.readouterr().out
    assert main([*quick, "--output-dir", str(tmp_path / "b")]) == 0
    assert (tmp_path / "a" / "submission.csv").read_bytes() == (tmp_path / "b" / "submission.csv").read_bytes()
    assert main([*quick, "--output-dir", str(tmp_path / "c"), "--seed", "7"]) == 0
    assert (tmp_path / "a" / "submission.csv").read_bytes() != (tmp_path / "c" / "submission.csv").read_bytes()


def test_input_errors_are_one_line_and_exit_2(small_stub, tmp_path, capsys):
    assert main(["--input-root", str(small_stub), "--output-dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert error.startswith("error: weights file xception_weights_tf_dim_ordering_tf_kernels_notop.h5 not found")
    assert main(["--input-root", str(tmp_path / "nowhere"), "--dry-run"]) == 2
    assert capsys.readouterr().err == f"error: input root {tmp_path / 'nowhere'}: not a folder\n"
    assert main(["--input-root", str(small_stub), "--dry-run", "--n-folds", "1"]) == 2
    assert capsys.readouterr().err == "error: config n_folds=1: expected at least 2\n"
