"""Runs with weights files, not --dry-run, on this GPU-less machine: what a Kaggle session with its accelerator
off gets, and what a real run elsewhere warns of and records. MobileNetV2 keeps the weights small."""
import json
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from kaggle_src import pipeline
from kaggle_src.backbones import BACKBONES
from tools.real_weights import write_legacy_weights

FLAGS = ["--backbones", "mobilenet_v2", "--image-size", "64", "--max-epochs", "5", "--no-logistic"]


@pytest.fixture(scope="module")
def weights_root(small_stub, tmp_path_factory):
    """small_stub with random-init MobileNetV2 weights in the legacy .h5 layout, under Keras' file name."""
    root = tmp_path_factory.mktemp("weights_root")
    shutil.copytree(small_stub, root, dirs_exist_ok=True)
    (root / "weights").mkdir()
    keras.utils.set_random_seed(0)
    backbone = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(64, 64, 3), pooling="avg")
    write_legacy_weights(backbone, root / "weights" / BACKBONES["mobilenet_v2"].weights_file)
    return root


def test_on_kaggle_a_run_without_a_gpu_stops_in_one_line(weights_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pipeline, "on_kaggle", lambda: True)
    code = pipeline.main(["--input-root", str(weights_root), "--output-dir", str(tmp_path), *FLAGS])
    assert code == 2
    assert capsys.readouterr().err == (
        "error: no GPU in this Kaggle session: turn the accelerator on (Settings > Accelerator > GPU T4 x2) and run "
        "again; features extracted on its CPUs would take hours\n"
    )
    assert not (tmp_path / "submission.csv").exists() and not (tmp_path / "features.npz").exists()


def test_elsewhere_it_warns_once_with_the_time_and_records_what_ran(weights_root, tmp_path, capsys):
    assert pipeline.main(["--input-root", str(weights_root), "--output-dir", str(tmp_path), *FLAGS]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1
    assert warnings[0].startswith("warning: no GPU: extracting the features of 80 images on the CPU, about ")
    assert warnings[0].endswith(" min at the pace of a first batch")
    runtime = json.loads((tmp_path / "metrics.json").read_text())["runtime"]
    assert runtime["gpus"] == []
    assert runtime["extraction"] == {"compute_dtype": "float32", "replicas": 1, "xla": False,  # one batch a split:
                                     "batch_size": {"train": 60, "test": 20}}  # fewer images than the CPU's 64
    assert (runtime["tensorflow"], runtime["keras"], runtime["numpy"]) == (tf.__version__, keras.__version__,
                                                                           np.__version__)


def test_a_smoke_run_takes_a_few_images_per_breed_draws_the_pictures_and_writes_no_submission(weights_root, tmp_path):
    import leaderboard

    assert pipeline.main(["--input-root", str(weights_root), "--output-dir", str(tmp_path), *FLAGS, "--smoke", "5"]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    confused = ["confused.jpg"] if metrics["pictures"]["confused"] else []  # none when no breed was taken for another
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(  # the pictures too, tried before a full run
        ["calibration.png", *confused, "metrics.json", "mistakes.jpg", "report.md"]
    )
    assert next(iter(metrics)) == "summary" and metrics["summary"].startswith(
        "SMOKE RUN, 5 images per breed, no submission.csv: submitted "
    )
    assert (tmp_path / "report.md").read_text().startswith(f"# {metrics['summary']}\n")
    assert (metrics["counts"]["train_images"], metrics["counts"]["test_images"]) == (5 * 10, 5)
    (tmp_path / "submission.csv").write_text("id,breed\n")  # a stale one beside it is not submitted either
    with pytest.raises(leaderboard.KaggleError, match="a smoke run's outputs .5 images per breed.: not submitted"):
        leaderboard.submit(tmp_path, "tester/dog-breed-xception-inception", tmp_path / "experiments.csv")
    assert not (tmp_path / "experiments.csv").exists()
