"""End to end on a small stub: the options submitted, determinism, one-line errors from the command line, and
TensorFlow kept out of the log. (The README's dry run: test_dry_run.py; damaged inputs: test_damaged_inputs.py.)"""
import json
import shutil
import subprocess
import sys

import keras
import numpy as np
import pandas as pd
import pytest

from kaggle_src import load_images, pipeline
from kaggle_src.backbones import BACKBONES
from kaggle_src.ensembles import OPTIONS
from kaggle_src.pictures import MISTAKES, THUMBNAIL
from kaggle_src.pipeline import main
from make_stub import COMPETITION
from tests.conftest import INPUT_STUB, QUICK, REPO, assert_sheet_shows

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
    # No image in memory: the sheets show the photos they record, decoded from train/.
    photos = metrics["pictures"]["mistakes"]["photos"]
    assert len(photos) == MISTAKES
    assert_sheet_shows(tmp_path / "mistakes.jpg", [small_stub / COMPETITION / "train" / f"{photo['id']}.jpg"
                                                   for photo in photos], THUMBNAIL)


def test_without_flips_or_logistic_regressions_their_options_are_left_out(small_stub, tmp_path):
    flags = ["--input-root", str(small_stub), "--output-dir", str(tmp_path), "--no-flips", "--no-logistic"]
    assert main([*QUICK, *flags]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert list(metrics["options"]) == ["heads_mean", "geometric", "blend"]
    assert "train_logistic" not in metrics["seconds"] and len(metrics["folds"]) == 5


def test_same_seed_same_submission_and_unknown_arguments_are_ignored(small_stub, quick_run, tmp_path, capsys):
    """A second run of quick_run's settings, with arguments Kaggle may pass, gives its submission; another seed (its
    folds and heads, on quick_run's features, with a second round of heads on pseudo-labels) not."""
    quick = [*QUICK, "--input-root", str(small_stub)]
    assert main([*quick, "--output-dir", str(tmp_path / "a"), "-f", "/tmp/kernel.json", "--no-flip"]) == 0
    assert capsys.readouterr().err.splitlines()[:2] == [
        "warning: argument -f /tmp/kernel.json: unknown; ignored",
        "warning: argument --no-flip: unknown (did you mean --no-flips?); ignored",
    ]
    assert (tmp_path / "a" / "submission.csv").read_bytes() == (quick_run / "submission.csv").read_bytes()
    assert main([*quick, "--output-dir", str(tmp_path / "c"), "--seed", "7", "--features", str(quick_run),
                 "--pseudo-labels", "soft"]) == 0
    assert (tmp_path / "a" / "submission.csv").read_bytes() != (tmp_path / "c" / "submission.csv").read_bytes()
    metrics = json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert metrics["config"]["pseudo_labels"] == "soft" and metrics["seconds"]["pseudo_labels"] > 0
    assert "second round of heads" in capsys.readouterr().out


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
                               "heads_mean, geometric, tta, tta_geometric, tta_geometric_temperature, logistic, heads_logistic, blend"),
    "ensemble not scored without flips": (lambda c: None, ["--dry-run", "--no-flips", "--ensemble", "tta"],
                                          "config ensemble='tta': expected one of the options these settings score: "
                                          "heads_mean, geometric, logistic, heads_logistic, blend"),
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
