"""Stage 6: submission.csv, checked against sample_submission.csv before it is written, every ensembling
option's test predictions in the same format, the submitted option's out-of-fold predictions, metrics.json
and report.md.

Every file is written to a temporary name and renamed into place, so a failed run never leaves a
half-written file nor replaces a good submission with a bad one.
"""
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd


class SubmissionError(ValueError):
    """A submission that Kaggle would reject or score wrongly."""


def write_predictions(options, chosen, competition, readable, output_dir, config):
    """Write every scored option's test predictions to test_predictions/, the `chosen` one's as submission.csv,
    and its out-of-fold predictions of the `readable` training images (their indices) to oof_predictions.csv.

    A smoke run's predictions cover a few images: its submission is validated, not written, nor are the others,
    so that none is taken for a submission.
    """
    test_ids, classes = competition.test_ids, competition.classes
    submission = make_submission(test_ids, classes, chosen.test)
    if config.smoke:
        validate_submission(submission, test_ids, classes)
        return
    write_test_predictions({scored.option.name: scored.test for scored in options}, test_ids, classes,
                           output_dir / "test_predictions")
    write_submission(submission, test_ids, classes, output_dir / "submission.csv")
    write_oof_predictions(
        [competition.train_ids[index] for index in readable],
        [classes[competition.train_labels[index]] for index in readable],
        classes,
        chosen.oof,
        output_dir / "oof_predictions.csv",
    )


def make_submission(test_ids, classes, probabilities):
    """The submission frame: id, then one column per class, each row normalised to sum to 1."""
    probabilities = np.asarray(probabilities, np.float64)
    expected = (len(test_ids), len(classes))
    if probabilities.shape != expected:
        raise SubmissionError(f"predictions of shape {probabilities.shape}: expected {expected}")
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
    submission = pd.DataFrame(probabilities, columns=list(classes))
    submission.insert(0, "id", list(test_ids))
    return submission


def validate_submission(submission, test_ids, classes):
    """Raise SubmissionError unless `submission` is id + `classes` columns and `test_ids` rows, in
    sample_submission.csv's order, with finite probabilities in [0, 1] that sum to 1 per row."""
    if list(submission.columns) != ["id", *classes]:
        raise SubmissionError("columns differ from sample_submission.csv's (names or order)")
    if submission["id"].duplicated().any():
        raise SubmissionError(f"id {submission['id'][submission['id'].duplicated()].iloc[0]!r} appears twice")
    if submission["id"].tolist() != list(test_ids):
        missing = set(test_ids) - set(submission["id"])
        raise SubmissionError(
            f"ids differ from sample_submission.csv's: {len(missing)} missing"
            if missing
            else "ids differ from sample_submission.csv's (extra ids or another order)"
        )
    values = submission.iloc[:, 1:].to_numpy(np.float64)
    if not np.isfinite(values).all():
        raise SubmissionError("probabilities are not all finite")
    if (values < 0).any() or (values > 1).any():
        raise SubmissionError("probabilities outside [0, 1]")
    worst = np.abs(values.sum(axis=1) - 1).max()
    if worst > 1e-6:
        raise SubmissionError(f"row sums differ from 1 by up to {worst:.2g}: expected each row to sum to 1")


def write_submission(submission, test_ids, classes, path):
    """Validate, then write `submission` atomically to `path`."""
    validate_submission(submission, test_ids, classes)
    write_atomically(path, lambda temporary: submission.to_csv(temporary, index=False, float_format="%.7g"))


def write_test_predictions(predictions, test_ids, classes, folder):
    """Write each option's test predictions, {option: (n_test, classes)}, to `folder`/<option>.csv as a
    validated submission, so that a competitor can blend them with other kernels'; remove the CSVs of options
    this run did not score, so that the folder holds this run's options only."""
    folder = Path(folder)
    folder.mkdir(exist_ok=True)
    for name, probabilities in predictions.items():
        path = folder / f"{name}.csv"
        try:
            write_submission(make_submission(test_ids, classes, probabilities), test_ids, classes, path)
        except SubmissionError as error:
            raise SubmissionError(f"{folder.name}/{path.name}: {error}") from None
    for path in folder.glob("*.csv"):
        if path.stem not in predictions:
            path.unlink()


def write_oof_predictions(train_ids, breeds, classes, probabilities, path):
    """Write out-of-fold predictions atomically: id, breed (the true one), then one column per class, each row
    normalised as the submission's are, so that a blend with other kernels' predictions can be scored out of fold."""
    predictions = make_submission(train_ids, classes, probabilities)
    predictions.insert(1, "breed", list(breeds))
    write_atomically(path, lambda temporary: predictions.to_csv(temporary, index=False, float_format="%.7g"))


def write_metrics(metrics, path):
    """Write the metrics dict as indented JSON, atomically."""
    write_atomically(path, lambda temporary: Path(temporary).write_text(json.dumps(metrics, indent=2) + "\n"))


def write_report(text, path):
    """Write the report's markdown `text`, atomically."""
    write_atomically(path, lambda temporary: Path(temporary).write_text(text))


def write_atomically(path, write):
    """Write `path` by `write(temporary)` to a temporary name beside it, then rename that into place: a failed write
    leaves no half-written file and keeps the old one."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
