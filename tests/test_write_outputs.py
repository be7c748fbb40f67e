import json

import numpy as np
import pandas as pd
import pytest

from kaggle_src.write_outputs import (
    SubmissionError, make_submission, validate_submission, write_metrics, write_oof_predictions, write_report,
    write_submission, write_test_predictions,
)

IDS = ["b" * 32, "a" * 32, "c" * 32]
CLASSES = ["akita", "beagle"]


def good():
    return make_submission(IDS, CLASSES, [[0.2, 0.6], [1.0, 1.0], [0.0, 3.0]])


def test_rows_are_normalised_and_keep_the_given_order():
    submission = good()
    assert list(submission.columns) == ["id", *CLASSES]
    assert submission["id"].tolist() == IDS
    np.testing.assert_allclose(submission[CLASSES].to_numpy(), [[0.25, 0.75], [0.5, 0.5], [0.0, 1.0]])
    validate_submission(submission, IDS, CLASSES)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda s: s[["id", "beagle", "akita"]], "columns differ"),
        (lambda s: s.iloc[[0, 1]], "1 missing"),
        (lambda s: s.iloc[[1, 0, 2]], "another order"),
        (lambda s: s.iloc[[0, 0, 2]], "appears twice"),
        (lambda s: s.assign(akita=[np.nan, 0.5, 0.0]), "not all finite"),
        (lambda s: s.assign(akita=[-0.25, 0.5, 0.0], beagle=[1.25, 0.5, 1.0]), r"outside \[0, 1\]"),
        (lambda s: s.assign(akita=[0.3, 0.5, 0.0]), "row sums differ from 1"),
    ],
)
def test_bad_frames_are_rejected(damage, message):
    with pytest.raises(SubmissionError, match=message):
        validate_submission(damage(good()), IDS, CLASSES)


def test_predictions_of_the_wrong_shape_are_rejected():
    with pytest.raises(SubmissionError, match=r"shape \(3, 3\): expected \(3, 2\)"):
        make_submission(IDS, CLASSES, np.ones((3, 3)))


def test_a_bad_submission_never_replaces_a_good_one(tmp_path):
    path = tmp_path / "submission.csv"
    write_submission(good(), IDS, CLASSES, path)
    written = path.read_bytes()
    assert pd.read_csv(path)["id"].tolist() == IDS
    with pytest.raises(SubmissionError):
        write_submission(good().iloc[:2], IDS, CLASSES, path)
    assert path.read_bytes() == written
    assert [p.name for p in tmp_path.iterdir()] == ["submission.csv"]


def test_metrics_are_json(tmp_path):
    write_metrics({"oof": {"ensemble": {"log_loss": 0.25}}}, tmp_path / "metrics.json")
    assert json.loads((tmp_path / "metrics.json").read_text())["oof"]["ensemble"]["log_loss"] == 0.25


def test_report_is_written_whole(tmp_path):
    write_report("# Run report\n", tmp_path / "report.md")
    assert (tmp_path / "report.md").read_text() == "# Run report\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_each_options_test_predictions_are_a_validated_submission_and_only_this_runs_options_stay(tmp_path):
    folder = tmp_path / "test_predictions"
    folder.mkdir()
    (folder / "tta.csv").write_text("an earlier run's option\n")
    predictions = {"heads_mean": [[0.2, 0.6], [1.0, 1.0], [0.0, 3.0]], "logistic": [[1.0, 0.0], [0.5, 0.5], [0.3, 0.7]]}
    write_test_predictions(predictions, IDS, CLASSES, folder)
    assert sorted(path.name for path in folder.iterdir()) == ["heads_mean.csv", "logistic.csv"]
    for name, probabilities in predictions.items():
        written = pd.read_csv(folder / f"{name}.csv")
        pd.testing.assert_frame_equal(written, make_submission(IDS, CLASSES, probabilities), rtol=1e-6)
    with pytest.raises(SubmissionError, match="test_predictions/geometric.csv: probabilities are not all finite"):
        write_test_predictions({"geometric": [[np.nan, 1.0], [1.0, 1.0], [1.0, 1.0]]}, IDS, CLASSES, folder)
    assert sorted(path.name for path in folder.iterdir()) == ["heads_mean.csv", "logistic.csv"]


def test_out_of_fold_predictions_hold_the_id_the_true_breed_and_normalised_rows(tmp_path):
    path = tmp_path / "oof_predictions.csv"
    write_oof_predictions(["x" * 32, "y" * 32], ["beagle", "akita"], CLASSES, [[0.5, 1.5], [0.9, 0.1]], path)
    oof = pd.read_csv(path)
    assert list(oof.columns) == ["id", "breed", *CLASSES]
    assert oof["id"].tolist() == ["x" * 32, "y" * 32] and oof["breed"].tolist() == ["beagle", "akita"]
    np.testing.assert_allclose(oof[CLASSES].to_numpy(), [[0.25, 0.75], [0.9, 0.1]])
    assert [p.name for p in tmp_path.iterdir()] == ["oof_predictions.csv"]
