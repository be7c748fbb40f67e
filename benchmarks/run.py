"""Speed and memory of kaggle_src, each measured side by side with the seed's method in the same run.

    python -m benchmarks.run                           # prints the table, writes benchmarks/results.json
    python -m benchmarks.run --json other.json

Rows: 1 loading (images/s), 2 extraction (images/s, both views and both backbones, same weights,
same size, same device: CPU at a reduced size, and at 299 px on each GPU found), 3 heads (seconds for
the 10-head CV on full-scale synthetic features, with the out-of-fold log loss of both), 3b logistic (seconds
for our logistic regressions against the public kernel's, per fold on the same features), 4 memory (peak
RSS of a full-scale load plus extraction, as a multiple of the uint8 image bytes), 5 on paper (FLOPs
per image, the T4 x2 float16 peak, the lower bound on extraction time that follows). Each timing is
the median of `--repeats` runs, the two sides taking turns (loading, under a second a turn, takes
`--loading-repeats` turns, as one slow turn of three decided the row on a busy machine; the heads,
and the logistic regressions, minutes a side, run once each);
rows 1-3b each run in a fresh process, row 4 too. Random-init weights stand in for ImageNet's (written
to legacy .h5 files and loaded by both sides): speed does not depend on the values.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import seed_reference  # noqa: E402
from kaggle_src.backbones import BACKBONES  # noqa: E402
from kaggle_src.config import make_config  # noqa: E402
from kaggle_src.ensembles import score_predictions  # noqa: E402
from kaggle_src.extract_features import build_backbone, build_extractor, compute_dtype, extract_features  # noqa: E402
from kaggle_src.load_images import LoadedImages  # noqa: E402
from kaggle_src.predict import predict_views  # noqa: E402
from kaggle_src.train_heads import make_folds, train_heads  # noqa: E402
from kaggle_src.train_logistic import train_logistic  # noqa: E402
from tools.real_weights import write_legacy_weights  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TRAIN_IMAGES, TEST_IMAGES, CLASSES, FEATURES = 10222, 10357, 120, 4096  # the competition's scale
T4_FLOAT16_TFLOPS = 65  # one Tesla T4's tensor cores (NVIDIA's datasheet); Kaggle's "GPU T4 x2" has two
IMAGE_SHAPES = [(500, 375), (375, 500), (500, 333), (500, 400), (400, 300), (640, 480)]  # Stanford Dogs' usual


def synthetic_jpegs(folder, count, seed=0):
    """`count` photo-like JPEGs (smooth colour fields, edges, noise) of the competition's usual sizes."""
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        width, height = IMAGE_SHAPES[index % len(IMAGE_SHAPES)]
        small = rng.uniform(0, 255, (6, 8, 3)).astype(np.float32)
        image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
        cv2.circle(image, (int(rng.integers(width)), int(rng.integers(height))), int(rng.integers(20, 150)),
                   rng.uniform(0, 255, 3).tolist(), -1)
        image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
        paths.append(folder / f"{index:05d}.jpg")
        cv2.imwrite(str(paths[-1]), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return paths


def timed(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def side_by_side(ours, reference, repeats):
    """Median seconds of `ours` and of `reference`, run in turns; and the last result of each."""
    times = {"ours": [], "reference": []}
    results = {}
    for _ in range(repeats):
        for name, function in (("ours", ours), ("reference", reference)):
            seconds, results[name] = timed(function)
            times[name].append(seconds)
    return statistics.median(times["ours"]), statistics.median(times["reference"]), results


def row(name, measure, ours, reference, higher_is_better, note=""):
    """One table row; `ours` is None where it was not measured (the ratio is then None too)."""
    ratio = None if ours is None else ours / reference if higher_is_better else reference / ours
    return {"row": name, "measure": measure, "ours": ours, "reference": reference,
            "speedup" if measure != "peak RSS / image bytes" else "ratio": ratio, "note": note}


def bench_loading(paths, size, repeats):
    ours, reference, _ = side_by_side(
        lambda: next(LoadedImages(paths, size).batches(len(paths))), lambda: seed_reference.load_images(paths, size),
        repeats,
    )
    return row("1 loading", "images/s", len(paths) / ours, len(paths) / reference, True,
               f"{len(paths)} JPEGs of about 500x375 -> {size} px; ours: joblib threads, bilinear, RGB; "
               "reference: a cv2.imread + cv2.resize loop")


def bench_extraction(paths, size, weights_dir, repeats, device, variants):
    """Ours (one fused model per variant of precision and XLA) vs the seed's four predict calls, same weights."""
    keras.utils.set_random_seed(0)
    weights = {}
    for name in ("xception", "inception_v3"):
        weights[name] = weights_dir / f"{size}_{BACKBONES[name].weights_file}"
        write_legacy_weights(build_backbone(name, size), weights[name])
    reference_weights = {BACKBONES[name].constructor: str(path) for name, path in weights.items()}
    loading = LoadedImages(paths, size)
    images = next(loading.batches(len(paths)))
    rows = []
    for precision, xla in variants:
        config = make_config(image_size=size, precision=precision, xla=xla)

        def ours():
            return extract_features(build_extractor(config, weights), loading, config.extract_batch_size)[0]

        ours_seconds, reference_seconds, results = side_by_side(
            ours, lambda: seed_reference.extract_features(images, size, reference_weights), repeats
        )
        difference = np.abs(results["ours"] - results["reference"]).max() / np.abs(results["reference"]).max()
        rows.append(row(
            f"2 extraction, {device}", "images/s", len(paths) / ours_seconds, len(paths) / reference_seconds, True,
            f"{len(paths)} images at {size} px, model builds included; ours {compute_dtype(precision)}, XLA {xla}; "
            f"reference float32; features differ by {difference:.1e} of their largest",
        ))
    return rows


def synthetic_features(n, seed, spread=0.2, label_noise=0.03):
    """ImageNet-like pooled features (non-negative) of two views: classes share a base pattern and differ by
    `spread`, and a share `label_noise` of the labels is wrong. With the defaults a seed head on one fold
    reached its best validation log loss, 0.24 (the seed's real CV score), at epoch 10 and stopped at 15:
    heads overfit and stop early, as on real features, rather than learning to zero."""
    rng = np.random.default_rng(seed)
    base = np.abs(rng.normal(0, 1, FEATURES)).astype(np.float32)
    prototypes = base + rng.normal(0, spread, (CLASSES, FEATURES)).astype(np.float32)
    labels = np.arange(n) % CLASSES
    rng.shuffle(labels)
    image = prototypes[labels] + rng.normal(0, 0.5, (n, FEATURES)).astype(np.float32)
    views = [np.maximum(image + rng.normal(0, 0.1, image.shape).astype(np.float32), 0) for _ in range(2)]
    wrong = rng.random(n) < label_noise
    labels[wrong] = rng.integers(0, CLASSES, wrong.sum())
    return np.stack(views, axis=1), labels


def bench_heads():
    features, labels = synthetic_features(TRAIN_IMAGES + TEST_IMAGES, seed=1)
    train, test = features[:TRAIN_IMAGES], features[TRAIN_IMAGES:]
    labels = labels[:TRAIN_IMAGES]
    config = make_config(standardise=False, members_per_head=1)  # the seed's 10 heads, as the reference fits them
    folds = make_folds(labels, config)

    def ours():
        heads, oof = train_heads(train, labels, folds, CLASSES, config)
        # The seed's 10-head mean: each head on its own view, out of fold and on the test set.
        return np.stack([oof[view, view] for view in range(2)]), predict_views(heads, test)

    def reference():
        return seed_reference.train_heads(train, labels, CLASSES, folds, test, config.dropout, config.learning_rate,
                                          config.max_epochs, config.patience, config.head_batch_size)

    ours_seconds, reference_seconds, results = side_by_side(ours, reference, 1)
    loss = {name: score_predictions(oof.mean(axis=0), labels, CLASSES)["log_loss"] for name, (oof, _) in results.items()}
    return row("3 heads", "seconds", ours_seconds, reference_seconds, False,
               f"10 heads, {TRAIN_IMAGES} x 2 views x {FEATURES} synthetic features, {TEST_IMAGES} test rows predicted; "
               f"out-of-fold log loss ours {loss['ours']:.4f}, reference {loss['reference']:.4f} "
               f"({100 * (loss['ours'] / loss['reference'] - 1):+.2f}%)") | {"oof_log_loss": loss}


def bench_logistic(n=TRAIN_IMAGES, n_test=TEST_IMAGES):
    """Row 3b: our logistic regressions (every view's rows, converged, C searched and cross-fitted) against the public
    kernel's (scikit-learn's defaults, original view), per fold on the same synthetic features: seconds and
    out-of-fold log loss."""
    features, labels = synthetic_features(n + n_test, seed=2)
    train, test = features[:n], features[n:]
    labels = labels[:n]
    config = make_config()
    folds = make_folds(labels, config)

    def ours():
        heads, oof = train_logistic(train, labels, folds, CLASSES, config)
        return np.mean([oof[view, view] for view in range(2)], axis=0), predict_views(heads, test)

    def reference():
        return seed_reference.train_logistic(train, labels, folds, test)

    ours_seconds, reference_seconds, results = side_by_side(ours, reference, 1)
    loss = {name: score_predictions(oof, labels, CLASSES)["log_loss"] for name, (oof, _) in results.items()}
    return row("3b logistic", "seconds", ours_seconds, reference_seconds, False,
               f"5 folds, {n} x 2 views x {FEATURES} synthetic features, {n_test} test rows; out-of-fold log loss "
               f"ours {loss['ours']:.4f}, reference {loss['reference']:.4f}") | {"oof_log_loss": loss}


def bench_memory(sources, images, size):
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory_probe", "--sources", str(sources), "--images", str(images),
         "--size", str(size)],
        cwd=REPO, capture_output=True, text=True, check=True,
    )
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    return row("4 memory", "peak RSS / image bytes", probe["peak_rss"] / probe["image_bytes"], 1.3, False,
               f"{images} images at {size} px = {probe['image_bytes'] / 2**30:.2f} GiB uint8; peak RSS "
               f"{probe['peak_rss'] / 2**30:.2f} GiB ({probe['rss_before_loading'] / 2**30:.2f} GiB before loading); "
               "reference column: the target (a float32 host copy alone would be 4.0)") | {"probe": probe}


def backbone_gflops(name, size=299):
    """Forward-pass GFLOP per image by TensorFlow's profiler (2 FLOP per multiply-add)."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    model = build_backbone(name, size)
    concrete = tf.function(lambda x: model(x)).get_concrete_function(tf.TensorSpec([1, size, size, 3], tf.float32))
    graph = convert_variables_to_constants_v2(concrete).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder(
        tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()).with_empty_output().build()
    return tf.compat.v1.profiler.profile(graph=graph, cmd="op", options=options).total_float_ops / 1e9


def on_paper(measured_rate, device):
    gflops = {name: backbone_gflops(name) for name in ("xception", "inception_v3")}
    total_pflop = (TRAIN_IMAGES + TEST_IMAGES) * 2 * sum(gflops.values()) / 1e6
    lower_bound = total_pflop * 1e15 / (2 * T4_FLOAT16_TFLOPS * 1e12)
    ours = (TRAIN_IMAGES + TEST_IMAGES) / measured_rate if measured_rate else None
    return row("5 on paper", "seconds", ours, lower_bound, False,
               f"GFLOP per 299 px image: xception {gflops['xception']:.1f}, inception_v3 {gflops['inception_v3']:.1f}; "
               f"both views of {TRAIN_IMAGES + TEST_IMAGES} images = {total_pflop:.2f} PFLOP; reference column: that "
               f"at T4 x2's float16 peak ({2 * T4_FLOAT16_TFLOPS} TFLOP/s); ours: "
               + (f"extraction projected from the measured rate on {device}" if ours else "not measured (no GPU here)"),
               ) | {"gflops": gflops}


def machine():
    gpus = tf.config.list_physical_devices("GPU")
    names = [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name) for gpu in gpus]
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": platform.python_version(),
            "tensorflow": tf.__version__, "keras": keras.__version__, "gpus": names}


def print_table(rows):
    def number(value, suffix=""):
        return "-" if value is None else f"{value:.2f}{suffix}"

    print(f"\n{'row':<28} {'measure':<24} {'ours':>10} {'reference':>10} {'ours vs ref':>12}")
    for entry in rows:
        ratio = entry.get("speedup", entry.get("ratio"))
        print(f"{entry['row']:<28} {entry['measure']:<24} {number(entry['ours']):>10} "
              f"{number(entry['reference']):>10} {number(ratio, 'x'):>12}")
        print(f"    {entry['note']}")


GROUPS = ("loading", "extraction", "heads", "logistic")  # the rows that time ours against the reference, in this order


def measure_group(group, args, sources):
    """The rows of `group`, measured in this process: loading, extraction (CPU, then each GPU variant) or heads."""
    paths = sorted(sources.glob("*.jpg"))
    if group == "loading":
        return [bench_loading(paths, 299, args.loading_repeats)]
    if group == "heads":
        return [bench_heads()]  # minutes a side: once each
    if group == "logistic":
        return [bench_logistic()]  # minutes a side: once each
    with tempfile.TemporaryDirectory() as weights_dir:
        with tf.device("/cpu:0"):
            rows = bench_extraction(paths[:args.cpu_images], args.cpu_size, Path(weights_dir), args.repeats, "CPU",
                                    [("float32", "off")])
        gpus = machine()["gpus"]
        if gpus:
            gpu_paths = [paths[index % len(paths)] for index in range(args.gpu_images)]
            variants = [("float32", "off"), ("auto", "off"), ("auto", "on")]
            rows += bench_extraction(gpu_paths, 299, Path(weights_dir), args.repeats, gpus[0], variants)
    return rows


def measure_in_own_process(group, args, sources):
    """measure_group in a fresh Python process: one row's leftovers (thread pools, allocations) slowed the
    next (the heads ran 2x slower after the extraction rows than alone), so no row shares a process."""
    command = [sys.executable, "-m", "benchmarks.run", "--group", group, "--sources", str(sources),
               "--repeats", str(args.repeats), "--loading-repeats", str(args.loading_repeats),
               "--cpu-size", str(args.cpu_size), "--cpu-images", str(args.cpu_images), "--gpu-images", str(args.gpu_images)]
    result = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
    if result.returncode:
        raise SystemExit(f"benchmark group {group} failed (exit code {result.returncode}); its error is above")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results.json")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--loading-repeats", type=int, default=15, help="turns of the loading row, each under a second")
    parser.add_argument("--cpu-size", type=int, default=96, help="image side for the CPU extraction row")
    parser.add_argument("--cpu-images", type=int, default=32, help="images in the CPU extraction row")
    parser.add_argument("--gpu-images", type=int, default=2048, help="images in each GPU extraction row (299 px)")
    parser.add_argument("--memory-images", type=int, default=TRAIN_IMAGES + TEST_IMAGES)
    parser.add_argument("--group", choices=GROUPS, help=argparse.SUPPRESS)  # internal: measure one group, print JSON
    parser.add_argument("--sources", type=Path, help=argparse.SUPPRESS)  # internal: the synthetic JPEGs' folder
    args = parser.parse_args()
    if args.group:
        print(json.dumps(measure_group(args.group, args, args.sources)))
        return
    started = time.perf_counter()
    info = machine()
    print(f"machine: {info}")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        sources = Path(scratch) / "jpegs"
        sources.mkdir()
        synthetic_jpegs(sources, 400)
        for group in GROUPS:
            group_rows = measure_in_own_process(group, args, sources)
            print_table(group_rows)
            rows += group_rows
        rows.append(bench_memory(sources, args.memory_images, 299))
        print_table(rows[-1:])
    gpu_rates = [entry["ours"] for entry in rows if entry["row"].startswith("2 extraction") and "CPU" not in entry["row"]]
    rows.append(on_paper(max(gpu_rates, default=None), info["gpus"][0] if info["gpus"] else None))
    seconds = time.perf_counter() - started
    print_table(rows)
    print(f"\n{seconds:.0f} s in all; wrote {args.json}")
    args.json.write_text(json.dumps({"machine": info, "seconds": round(seconds, 1), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
