"""Cached features: a heads-only run on them equals the run that saved them; a cache that does not fit is refused."""
import json
import shutil

import numpy as np
import pytest

from kaggle_src.feature_cache import FEATURES_FILE, MANIFEST_FILE
from kaggle_src.pipeline import main
from tests.conftest import QUICK


def test_heads_only_run_on_cached_features_equals_the_full_run(small_stub, quick_run, tmp_path, capsys):
    """quick_run extracted and saved the features; a heads-only run on them gives its submission."""
    nested = tmp_path / "input" / "dog-breed-xception-inception"  # as Kaggle mounts a kernel's output
    shutil.copytree(quick_run, nested)
    output = tmp_path / "heads"
    assert main(["--input-root", str(small_stub), "--output-dir", str(output), "--features", str(tmp_path / "input"),
                 *QUICK]) == 0
    assert f"features from {nested}: mobilenet_v2" in capsys.readouterr().out
    assert (output / "submission.csv").read_bytes() == (quick_run / "submission.csv").read_bytes()
    assert not (output / FEATURES_FILE).exists()  # nothing extracted, nothing saved again
    heads_metrics, full_metrics = (json.loads((folder / "metrics.json").read_text()) for folder in (output, quick_run))
    assert heads_metrics["oof"] == full_metrics["oof"]
    assert "extract_features" not in heads_metrics["seconds"] and "load_features" in heads_metrics["seconds"]


def test_the_cache_is_float16_with_a_manifest_of_what_it_holds(small_stub, quick_run):
    manifest = json.loads((quick_run / MANIFEST_FILE).read_text())
    labels = (small_stub / "dog-breed-identification" / "labels.csv").read_text().split()[1:]
    assert manifest["train_ids"] == [line.split(",")[0] for line in labels]
    assert (manifest["backbones"], manifest["views"], manifest["features"]) == (
        ["mobilenet_v2"], ["original", "flipped"], 1280
    )
    assert manifest["input_sizes"] == {"mobilenet_v2": 75}
    assert manifest["weights_sha256"] == "random-init (dry run)" and manifest["package_commit"].startswith("unbuilt")
    with np.load(quick_run / FEATURES_FILE) as stored:
        assert stored["train"].dtype == np.float16 and stored["train"].shape == (60, 2, 1280)
        assert stored["test"].shape == (20, 2, 1280) and stored["mean"].dtype == np.float32


@pytest.mark.parametrize("damage, message", [
    ("ids", "its train ids differ from the competition's"),
    ("views", "views ['original', 'flipped']: expected ['original'] (the flips setting)"),
    ("missing", "no folder holds features_manifest.json and features.npz"),
])
def test_a_cache_that_does_not_fit_stops_with_one_line(small_stub, quick_run, tmp_path, capsys, damage, message):
    cache = tmp_path / "cache"
    shutil.copytree(quick_run, cache)
    flags = []
    if damage == "ids":
        manifest = json.loads((cache / MANIFEST_FILE).read_text())
        manifest["train_ids"] = manifest["train_ids"][::-1]
        (cache / MANIFEST_FILE).write_text(json.dumps(manifest))
    elif damage == "views":
        flags = ["--no-flips"]
    else:
        (cache / FEATURES_FILE).unlink()
    assert main(["--input-root", str(small_stub), "--output-dir", str(tmp_path / "out"), "--features", str(cache),
                 *QUICK, *flags]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error
