"""The benchmark's parts on a tiny scale: the seed-style reference computes what ours computes, so the
side-by-side timings compare like with like. (Timings themselves are for `python -m benchmarks.run`.)"""
import numpy as np

from benchmarks import seed_reference
from benchmarks.pictures import bench_pictures
from benchmarks.run import (
    bench_extraction, bench_loading, bench_logistic, print_table, row, synthetic_features, synthetic_jpegs,
)
from kaggle_src.config import make_config
from kaggle_src.ensembles import score_predictions
from kaggle_src.load_images import LoadedImages
from kaggle_src.train_heads import make_folds


def test_loading_rows_compare_the_same_images(tmp_path):
    paths = synthetic_jpegs(tmp_path, 6)
    ours = next(LoadedImages(paths, 299).batches(len(paths)))
    reference = seed_reference.load_images(paths, 299)  # BGR, as the public kernels kept it
    assert (ours == reference[..., ::-1]).all()  # the same bilinear resize: the same pixels, in RGB
    row = bench_loading(paths, 299, repeats=1)
    assert row["ours"] > 0 and row["reference"] > 0 and row["speedup"] == row["ours"] / row["reference"]


def test_extraction_reference_gives_our_features_from_the_same_weights_files(tmp_path):
    (tmp_path / "jpegs").mkdir()
    paths = synthetic_jpegs(tmp_path / "jpegs", 3)
    [row] = bench_extraction(paths, 75, tmp_path, 1, "CPU", [("float32", "off")])
    difference = float(row["note"].split("features differ by ")[1].split(" ")[0])
    assert difference < 1e-4


def test_sequential_reference_heads_learn_and_fill_every_out_of_fold_row():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 30)
    centres = rng.normal(0, 1, (4, 32))
    features = np.stack([centres[labels] + rng.normal(0, 0.3, (120, 32))] * 2, axis=1).astype(np.float32)
    oof, predictions = seed_reference.train_heads(features, labels, 4, make_folds(labels, make_config(n_folds=2, seed=0)),
                                                  features[:10], learning_rate=0.03, epochs=10)
    assert oof.shape == (2, 120, 4) and predictions.shape == (10, 4)
    np.testing.assert_allclose(oof.sum(axis=-1), 1, rtol=1e-5)
    assert score_predictions(oof.mean(axis=0), labels, 4)["log_loss"] < 0.25 * np.log(4)


def test_synthetic_features_have_the_shape_of_pooled_imagenet_features():
    features, labels = synthetic_features(2400, seed=0)
    assert features.shape == (2400, 2, 4096) and features.dtype == np.float32 and features.min() >= 0
    assert np.bincount(labels, minlength=120).min() > 5  # every class present


def test_a_row_not_measured_has_no_ratio_and_prints_a_dash(capsys):
    unmeasured = row("5 on paper", "seconds", None, 8.94, False, "no GPU here")
    measured = row("3 heads", "seconds", 50.0, 100.0, False)
    assert unmeasured["ours"] is None and unmeasured["speedup"] is None and measured["speedup"] == 2.0
    print_table([unmeasured, measured])
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].split()[-3:] == ["-", "8.94", "-"] and lines[4].split()[-3:] == ["50.00", "100.00", "2.00x"]


def test_logistic_rows_compare_both_sides_on_the_same_features():
    result = bench_logistic(n=600, n_test=20)
    assert result["ours"] > 0 and result["reference"] > 0
    assert set(result["oof_log_loss"]) == {"ours", "reference"}
    assert all(0 < loss < np.log(120) for loss in result["oof_log_loss"].values())  # both learn


def test_the_pictures_row_times_thumbnails_drawing_and_import_and_writes_the_pictures(tmp_path):
    result = bench_pictures(images=40, size=200, pool=4, repeats=1, folder=tmp_path)
    assert all(result[name] > 0 for name in ("thumbnails", "draw", "import_matplotlib"))
    assert result["total"] == result["thumbnails"] + result["draw"] + result["import_matplotlib"]
    assert 0 < result["bytes"] == sum((tmp_path / name).stat().st_size
                                      for name in ("mistakes.jpg", "confused.jpg", "calibration.png"))
