import json

import numpy as np
import pandas as pd
import pytest

from kaggle_src.write_outputs import (
    SubmissionError, make_submission, validate_submission, write_metrics, write_report, write_submission,
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
