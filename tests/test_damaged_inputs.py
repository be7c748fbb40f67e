"""Damaged and oddly encoded inputs, end to end: what a run survives, how each warning names what it did, and
that no test row is ever lost (damaged_run, conftest.py's run over every kind of damage, and random damage)."""
import contextlib
import io
import json
import math
import os
import random
import shutil

import numpy as np
import pandas as pd
import pytest

from kaggle_src.config import InputError, make_config
from kaggle_src.find_inputs import read_competition
from kaggle_src.pictures import MISTAKES
from kaggle_src.pipeline import MAX_NAMED, main, warn_unreadable
from kaggle_src.predict import class_prior
from make_stub import COMPETITION
from tests.conftest import ODD, QUICK, UNREADABLE, assert_sheet_shows, damage, warnings_in


def expected_warning(root, split, image_id):
    consequence = "left out of training" if split == "train" else "its row gets the training class prior"
    path = root / COMPETITION / split / f"{image_id}.jpg"
    return f"warning: {split} id {image_id}: {path} is missing, empty or not decodable; {consequence}"


def test_unreadable_images_past_the_cap_are_counted_and_too_few_readable_to_train_stops(small_stub, capsys):
    competition = read_competition(small_stub / COMPETITION)
    warn_unreadable(competition, "test", list(range(MAX_NAMED + 3)), make_config(n_folds=5))
    named = [expected_warning(small_stub, "test", image_id) for image_id in competition.test_ids[:MAX_NAMED]]
    counted = "warning: 3 more unreadable test images; metrics.json lists them all"
    assert capsys.readouterr().err.splitlines() == [*named, counted]
    labels = competition.train_labels
    beyond_four_per_breed = [index for index in range(len(labels)) if (labels[:index] == labels[index]).sum() >= 4]
    with pytest.raises(InputError) as error:
        warn_unreadable(competition, "train", beyond_four_per_breed, make_config(n_folds=5))
    assert str(error.value) == (
        f"{small_stub / COMPETITION / 'train'}: 40 of 60 images readable; 5-fold CV needs at least 5 of one breed"
    )
    warn_unreadable(competition, "train", beyond_four_per_breed, make_config(n_folds=4))  # 4 of each breed: enough for 4 folds


def read_run(root, output_dir):
    """(sample_submission.csv, labels.csv, submission.csv, metrics.json) of a run, the CSVs' ids stripped."""
    competition = root / COMPETITION
    sample, labels = (
        pd.read_csv(competition / name, dtype=str, encoding="utf-8-sig").assign(id=lambda t: t["id"].str.strip())
        for name in ("sample_submission.csv", "labels.csv")
    )
    submission = pd.read_csv(output_dir / "submission.csv")
    return sample, labels.drop_duplicates("id"), submission, json.loads((output_dir / "metrics.json").read_text())


def assert_every_row_is_there(sample, submission):
    assert list(submission.columns) == list(sample.columns)
    assert submission["id"].tolist() == sample["id"].tolist()
    values = submission.iloc[:, 1:].to_numpy()
    assert np.isfinite(values).all() and (values >= 0).all()
    np.testing.assert_allclose(values.sum(axis=1), 1, atol=1e-5)


def prior_of(labels, unreadable_train, classes):
    """The class prior of the readable training images, from labels.csv."""
    readable = labels[~labels["id"].isin(unreadable_train)]
    return class_prior(readable["breed"].map(classes.index).to_numpy(), len(classes))


def test_unreadable_test_images_keep_their_rows_with_the_class_prior(damaged_stub, damaged_run):
    root, damaged = damaged_stub
    assert damaged_run.code == 0, damaged_run.stderr[-3000:]
    sample, labels, submission, metrics = read_run(root, damaged_run.output_dir)
    assert_every_row_is_there(sample, submission)
    unreadable = [image_id for image_id in sample["id"] if damaged.get(image_id) in UNREADABLE]
    assert len(unreadable) == len(UNREADABLE) and metrics["unreadable"]["test"] == unreadable
    for image_id in unreadable:
        assert expected_warning(root, "test", image_id) in warnings_in(damaged_run.stderr)
    prior = prior_of(labels, metrics["unreadable"]["train"], list(sample.columns[1:]))
    rows = submission.set_index("id").loc[unreadable].to_numpy()
    np.testing.assert_allclose(rows, np.tile(prior, (len(unreadable), 1)), rtol=1e-6)
    assert not np.allclose(submission.set_index("id").drop(unreadable).to_numpy(), prior, atol=1e-3)


def test_unreadable_training_images_are_left_out_with_a_warning(damaged_stub, damaged_run):
    root, damaged = damaged_stub
    sample, labels, submission, metrics = read_run(root, damaged_run.output_dir)
    unreadable = [image_id for image_id in labels["id"] if damaged.get(image_id) in UNREADABLE]
    assert len(unreadable) == len(UNREADABLE) and metrics["unreadable"]["train"] == unreadable
    assert [expected_warning(root, "train", image_id) for image_id in unreadable] == [
        line for line in warnings_in(damaged_run.stderr) if line.startswith("warning: train id")
    ]
    classes = list(sample.columns[1:])
    readable = labels[~labels["id"].isin(unreadable)]
    assert damaged_run.trained_labels.tolist() == readable["breed"].map(classes.index).tolist()
    # The photo sheets: readable photos only, each in its own cell though the unreadable ones shift the rows.
    shown = [photo["id"] for photo in metrics["pictures"]["mistakes"]["photos"]]
    assert len(shown) == MISTAKES and not set(shown) & set(unreadable)
    assert_sheet_shows(damaged_run.output_dir / "mistakes.jpg",
                       [root / COMPETITION / "train" / f"{image_id}.jpg" for image_id in shown],
                       int(QUICK[QUICK.index("--image-size") + 1]))


def test_out_of_fold_and_every_options_test_predictions_are_written_for_blending(damaged_stub, damaged_run):
    root, _ = damaged_stub
    sample, labels, submission, metrics = read_run(root, damaged_run.output_dir)
    folder = damaged_run.output_dir / "test_predictions"
    assert sorted(path.name for path in folder.iterdir()) == sorted(f"{name}.csv" for name in metrics["options"])
    chosen = metrics["chosen"]["option"]
    assert (folder / f"{chosen}.csv").read_bytes() == (damaged_run.output_dir / "submission.csv").read_bytes()
    unreadable = metrics["unreadable"]["test"]
    for name in metrics["options"]:
        predictions = pd.read_csv(folder / f"{name}.csv")
        assert_every_row_is_there(sample, predictions)
        np.testing.assert_array_equal(  # the class prior, as in the submission
            predictions.set_index("id").loc[unreadable], submission.set_index("id").loc[unreadable]
        )
    oof = pd.read_csv(damaged_run.output_dir / "oof_predictions.csv")
    readable = labels[~labels["id"].isin(metrics["unreadable"]["train"])]
    assert list(oof.columns) == ["id", "breed", *sample.columns[1:]]
    assert oof["id"].tolist() == readable["id"].tolist() and oof["breed"].tolist() == readable["breed"].tolist()
    probabilities = oof.iloc[:, 2:].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    true_breed = oof.columns[2:].get_indexer(oof["breed"])
    oof_log_loss = -np.log(probabilities[np.arange(len(oof)), true_breed]).mean()
    assert math.isclose(oof_log_loss, metrics["oof"]["ensemble"]["log_loss"], rel_tol=1e-4)


def test_odd_but_valid_images_are_used_without_a_warning(damaged_stub, damaged_run):
    root, damaged = damaged_stub
    metrics = json.loads((damaged_run.output_dir / "metrics.json").read_text())
    odd = [image_id for image_id, kind in damaged.items() if kind in ODD]
    assert len(odd) == len(ODD) + 10 - len(UNREADABLE)  # every odd kind in the test split, six in the training split
    assert not set(odd) & {*metrics["unreadable"]["train"], *metrics["unreadable"]["test"]}
    assert not [line for line in warnings_in(damaged_run.stderr) if any(image_id in line for image_id in odd)]


def test_csvs_with_a_bom_crlf_and_spaced_ids_and_a_repeated_label_still_run(damaged_stub, damaged_run):
    root, _ = damaged_stub
    sample, labels, submission, metrics = read_run(root, damaged_run.output_dir)
    assert submission["id"].tolist() == sample["id"].tolist()  # stripped, as Kaggle lists them
    repeated = pd.read_csv(root / COMPETITION / "labels.csv", dtype=str, encoding="utf-8-sig")["id"].iloc[-1].strip()
    assert (
        f"warning: {root / COMPETITION / 'labels.csv'}: id {repeated!r} listed more than once with the same breed; "
        "counted once"
    ) in warnings_in(damaged_run.stderr)
    assert metrics["counts"]["train_images"] == len(labels)


def test_randomly_damaged_images_never_cost_a_test_row(small_stub, tmp_path):
    """Damages 12 images drawn at random from both splits; rerun a failure with DAMAGE_SEED=<its seed>. (Heads
    alone: what becomes of a row does not depend on the models.)"""
    seed = int(os.environ.get("DAMAGE_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    root = tmp_path / "input"
    shutil.copytree(small_stub, root)
    images = sorted((root / COMPETITION).glob("*/*.jpg"))
    kinds = [*UNREADABLE, *ODD, "cut_at_random", "bytes_flipped"]
    damaged = {}
    for path in rng.sample(images, 12):
        kind = damaged[path.stem] = rng.choice(kinds)
        data = path.read_bytes()
        if kind == "cut_at_random":
            path.write_bytes(data[: rng.randrange(len(data))])
        elif kind == "bytes_flipped":
            positions = set(rng.sample(range(len(data)), 20))
            path.write_bytes(bytes(byte ^ 0xFF if index in positions else byte for index, byte in enumerate(data)))
        else:
            damage(path, kind)
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = main(["--input-root", str(root), "--output-dir", str(tmp_path / "out"), *QUICK, "--no-logistic"])
    context = f"DAMAGE_SEED={seed}, damaged {damaged}"
    assert code == 0, f"{context}\n{stderr.getvalue()[-3000:]}"
    sample, labels, submission, metrics = read_run(root, tmp_path / "out")
    assert_every_row_is_there(sample, submission)
    unreadable = {split: set(ids) for split, ids in metrics["unreadable"].items()}
    assert {image_id for image_id, kind in damaged.items() if kind in UNREADABLE} <= unreadable["train"] | unreadable[
        "test"
    ], context
    assert unreadable["train"] | unreadable["test"] <= set(damaged), context
    for split, ids in unreadable.items():
        for image_id in ids:
            assert expected_warning(root, split, image_id) in warnings_in(stderr.getvalue()), context
    prior = prior_of(labels, unreadable["train"], list(sample.columns[1:]))
    rows = submission.set_index("id").loc[sorted(unreadable["test"])].to_numpy()
    np.testing.assert_allclose(rows, np.tile(prior, (len(rows), 1)), rtol=1e-6, err_msg=context)
