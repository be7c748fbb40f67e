"""End to end on small stubs: the options submitted, determinism, one-line errors from the command line, and
damaged inputs. (The README's dry run on input_stub: test_dry_run.py.)"""
import contextlib
import io
import json
import math
import os
import random
import shutil
import subprocess
import sys

import keras
import numpy as np
import pandas as pd
import pytest

from kaggle_src import load_images, pipeline
from kaggle_src.backbones import BACKBONES
from kaggle_src.config import InputError, make_config
from kaggle_src.ensembles import OPTIONS
from kaggle_src.find_inputs import read_competition
from kaggle_src.pipeline import MAX_NAMED, main, warn_unreadable
from kaggle_src.predict import class_prior
from make_stub import COMPETITION
from tests.conftest import INPUT_STUB, ODD, QUICK, REPO, UNREADABLE, damage, warnings_in


def test_the_option_set_by_ensemble_is_submitted_and_every_option_still_scored(
    small_stub, quick_run, tmp_path, monkeypatch
):
    """--ensemble tta, not the best option out of fold here, submits tta's test predictions. The heads train on
    quick_run's saved features: the choice of option does not depend on how they were extracted."""
    scored, score_options = [], pipeline.score_options
    monkeypatch.setattr(pipeline, "score_options", lambda *args: scored.extend(score_options(*args)) or scored)
    assert main([*QUICK, "--input-root", str(small_stub), "--output-dir", str(tmp_path), "--ensemble", "tta",
                 "--features", str(quick_run)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert list(metrics["options"]) == [option.name for option in OPTIONS]
    best = min(metrics["options"], key=lambda name: metrics["options"][name]["log_loss"])
    assert metrics["chosen"]["option"] == "tta" != best == metrics["chosen"]["best_out_of_fold"]
    assert metrics["oof"]["ensemble"] == {key: metrics["options"]["tta"][key] for key in ("log_loss", "accuracy")}
    tta = next(option for option in scored if option.option.name == "tta")
    submission = pd.read_csv(tmp_path / "submission.csv").set_index("id").to_numpy()
    np.testing.assert_allclose(submission, tta.test / tta.test.sum(axis=1, keepdims=True), rtol=1e-6)
    assert f"Submitted: **tta** (set by --ensemble; the best out of fold is {best})" in (
        tmp_path / "report.md"
    ).read_text()


def test_without_flips_or_logistic_regressions_their_options_are_left_out(small_stub, tmp_path):
    flags = ["--input-root", str(small_stub), "--output-dir", str(tmp_path), "--no-flips", "--no-logistic"]
    assert main([*QUICK, *flags]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert list(metrics["options"]) == ["heads_mean", "geometric", "blend"]
    assert "train_logistic" not in metrics["seconds"] and len(metrics["folds"]) == 5


def test_same_seed_same_submission_and_unknown_arguments_are_ignored(small_stub, quick_run, tmp_path, capsys):
    """A second run of quick_run's settings, with arguments Kaggle may pass, gives its submission; another seed not."""
    quick = [*QUICK, "--input-root", str(small_stub)]
    assert main([*quick, "--output-dir", str(tmp_path / "a"), "-f", "/tmp/kernel.json", "--no-flip"]) == 0
    assert capsys.readouterr().err.splitlines()[:2] == [
        "warning: argument -f /tmp/kernel.json: unknown; ignored",
        "warning: argument --no-flip: unknown (did you mean --no-flips?); ignored",
    ]
    assert (tmp_path / "a" / "submission.csv").read_bytes() == (quick_run / "submission.csv").read_bytes()
    assert main([*quick, "--output-dir", str(tmp_path / "c"), "--seed", "7"]) == 0
    assert (tmp_path / "a" / "submission.csv").read_bytes() != (tmp_path / "c" / "submission.csv").read_bytes()


def edit_csv(path, edit):
    edit(pd.read_csv(path, dtype=str)).to_csv(path, index=False)


# name: (damage to the competition folder c, flags after --input-root and --output-dir, the expected error line after
# "error: "). The line's fields: c, root (the input root), and from the stub: id0 and breed0 (labels.csv's first row),
# breed1 (another breed), test0 (sample_submission.csv's first id).
STOPS = {
    "labels.csv missing": (lambda c: (c / "labels.csv").unlink(), ["--dry-run"],
                           "{c}/labels.csv: file not found (beside sample_submission.csv)"),
    "labels.csv empty": (lambda c: (c / "labels.csv").write_text(""), ["--dry-run"],
                         "{c}/labels.csv: not a readable CSV (No columns to parse from file)"),
    "labels.csv without rows": (lambda c: (c / "labels.csv").write_text("id,breed\n"), ["--dry-run"],
                                "{c}/labels.csv: no rows"),
    "labels.csv without breed": (lambda c: edit_csv(c / "labels.csv", lambda t: t.rename(columns={"breed": "dog"})),
                                 ["--dry-run"], "{c}/labels.csv: missing column 'breed' (has id, dog)"),
    "sample missing": (lambda c: (c / "sample_submission.csv").unlink(), ["--dry-run"],
                       "{c}/sample_submission.csv: file not found (beside labels.csv)"),
    "sample empty": (lambda c: (c / "sample_submission.csv").write_text(""), ["--dry-run"],
                     "{c}/sample_submission.csv: not a readable CSV (No columns to parse from file)"),
    "sample without breeds": (lambda c: edit_csv(c / "sample_submission.csv", lambda t: t[["id"]]), ["--dry-run"],
                              "{c}/sample_submission.csv: expected columns id, then one per breed"),
    "unknown breed": (lambda c: edit_csv(c / "labels.csv", lambda t: t.assign(breed=["dingo_deluxe", *t.breed[1:]])),
                      ["--dry-run"], "{c}/labels.csv: breed 'dingo_deluxe' is not a column of sample_submission.csv"),
    "id with two breeds": (
        lambda c: edit_csv(c / "labels.csv", lambda t: pd.concat([t, t.iloc[[0]].assign(breed=other_breed(t))])),
        ["--dry-run"], "{c}/labels.csv: id '{id0}' appears with different breeds ({breed0}, {breed1})",
    ),
    "sample id twice": (lambda c: edit_csv(c / "sample_submission.csv", lambda t: pd.concat([t, t.iloc[[0]]])),
                        ["--dry-run"], "{c}/sample_submission.csv: id '{test0}' appears more than once"),
    "train folder missing": (lambda c: shutil.rmtree(c / "train"), ["--dry-run"],
                             "{c}/train: folder not found; expected the train images as <id>.jpg there"),
    "weights missing": (lambda c: None, [], "weights file xception_weights_tf_dim_ordering_tf_kernels_notop.h5 not "
                        "found under {root}; attach the Kaggle dataset gaborfodor/keras-pretrained-models "
                        "(or use --dry-run)"),
    "output dir unwritable": (lambda c: None, ["--dry-run", "--output-dir", "{c}/labels.csv/out"],
                              "output dir {c}/labels.csv/out: cannot be written (Not a directory)"),
    "input root missing": (lambda c: None, ["--dry-run", "--input-root", "{root}/nowhere"],
                           "input root {root}/nowhere: not a folder"),
    "unknown backbone": (lambda c: None, ["--dry-run", "--backbones", "xception,resnet9000"],
                         "config backbones='xception,resnet9000': expected one or more of " + ", ".join(BACKBONES)),
    "one fold": (lambda c: None, ["--dry-run", "--n-folds", "1"], "config n_folds=1: expected at least 2"),
    "image below a backbone's minimum": (lambda c: None, ["--dry-run", "--image-size", "72"],
                                         "config image_size=72: expected at least 75 for these backbones"),
    "ensemble not an option": (lambda c: None, ["--dry-run", "--ensemble", "best"],
                               "config ensemble='best': expected one of the options these settings score: "
                               "heads_mean, geometric, tta, tta_geometric, tta_geometric_temperature, logistic, blend"),
    "ensemble not scored without flips": (lambda c: None, ["--dry-run", "--no-flips", "--ensemble", "tta"],
                                          "config ensemble='tta': expected one of the options these settings score: "
                                          "heads_mean, geometric, logistic, blend"),
    "a flag's value of the wrong type": (lambda c: None, ["--dry-run", "--image-size", "abc"],
                                         "config image_size='abc': expected an integer"),
    "a switch given a value": (lambda c: None, ["--dry-run", "--flips=yes"],
                               "argument --flips/--no-flips: ignored explicit argument 'yes'"),
    "a flag without its value": (lambda c: None, ["--dry-run", "--n-folds"],
                                 "argument --n-folds: expected one argument"),
}


def other_breed(labels):
    return next(breed for breed in labels["breed"] if breed != labels["breed"][0])


@pytest.fixture
def no_heavy_work(monkeypatch):
    """Building a backbone or decoding an image fails the test: the input checks must stop a run before either."""

    def heavy(*args, **kwargs):
        raise AssertionError("heavy work started before the input checks finished")

    for backbone in BACKBONES.values():
        monkeypatch.setattr(keras.applications, backbone.constructor, heavy)
    monkeypatch.setattr(load_images, "load_image", heavy)


@pytest.mark.parametrize("name", STOPS)
def test_every_stop_is_one_line_naming_the_file_and_value_before_any_heavy_work(
    name, small_stub, tmp_path, capsys, no_heavy_work
):
    root, out = tmp_path / "input", tmp_path / "out"
    shutil.copytree(small_stub, root)
    competition = root / COMPETITION
    labels = pd.read_csv(competition / "labels.csv", dtype=str)
    fields = {
        "c": competition, "root": root, "id0": labels["id"][0], "breed0": labels["breed"][0],
        "breed1": other_breed(labels), "test0": pd.read_csv(competition / "sample_submission.csv")["id"][0],
    }
    damage_folder, flags, expected = STOPS[name]
    damage_folder(competition)
    flags = [flag.format(**fields) for flag in flags]
    assert stop_code(main, ["--input-root", str(root), "--output-dir", str(out), *flags]) == 2
    assert capsys.readouterr() == ("", f"error: {expected.format(**fields)}\n")
    assert not (out / "submission.csv").exists()


def stop_code(entry, arguments):
    """The exit code of `entry(arguments)`, whether it returns it or, as argparse does, raises SystemExit."""
    try:
        return entry(arguments)
    except SystemExit as stop:
        return stop.code


def test_a_stop_comes_before_tensorflow_is_imported(tmp_path):
    """TensorFlow 2.19+ logs at import whatever TF_CPP_MIN_LOG_LEVEL says: a stop must not import it."""
    entry = (
        "import sys; from kaggle_src.pipeline import main; code = main(sys.argv[1:]); "
        "print('imported:', sorted({'tensorflow', 'keras'} & set(sys.modules))); sys.exit(code)"
    )
    arguments = ["--input-root", str(INPUT_STUB), "--output-dir", str(tmp_path / "out")]  # no weights, no --dry-run
    result = subprocess.run([sys.executable, "-c", entry, *arguments], capture_output=True, text=True, cwd=REPO)
    assert (result.returncode, result.stdout.splitlines()[-1:]) == (2, ["imported: []"])
    assert result.stderr.startswith("error: weights file xception_weights_tf_dim_ordering_tf_kernels_notop.h5")
    assert result.stderr.count("\n") == 1


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
    """Damages 12 images drawn at random from both splits; rerun a failure with DAMAGE_SEED=<its seed>."""
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
        code = main(["--input-root", str(root), "--output-dir", str(tmp_path / "out"), *QUICK])
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


def test_tensorflows_start_up_notices_are_left_out_of_the_log_and_everything_else_passed_on(tmp_path):
    """From 2.19 TensorFlow prints them at import, twice, whatever TF_CPP_MIN_LOG_LEVEL says."""
    (tmp_path / "noisy.py").write_text(
        "import os\n"
        "os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n'\n"
        "            b'I0000 port.cc:153] oneDNN custom operations are on. You may see slightly different ...\\n'\n"
        "            b'E0000 cuda_dnn.cc:8579] Unable to register cuDNN factory\\n')\n"
    )
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); from kaggle_src.pipeline import import_quietly; "
             "import_quietly('noisy'); import_quietly('tensorflow'); print('imported', file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    assert (result.returncode, result.stderr) == (0, "E0000 cuda_dnn.cc:8579] Unable to register cuDNN factory\nimported\n")
