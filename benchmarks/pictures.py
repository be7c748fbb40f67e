"""What the pictures add to a full run at the competition's scale: the thumbnails of 10,000 training images at 448 px,
made while they are in memory, then the three pictures drawn from them, as pipeline.run does; and importing
matplotlib, once a run.

    python -m benchmarks.pictures                                   # 10,000 images at 448 px, 5 repeats
    python -m benchmarks.pictures --images 10000 --size 448 --repeats 5

The images are benchmarks.run's photo-like JPEGs loaded by kaggle_src's loader, --pool of them, each row of the
10,000 one of those (a 6 GB array would not fit beside the rest of a small machine; past the CPU's caches, one image
is read as slowly as another). The out-of-fold predictions are synthetic: 120 breeds, about 90% right. Each timing
is the median of --repeats; the import is timed in fresh processes. The test set's path runs none of this.
"""
import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from benchmarks.run import CLASSES, synthetic_jpegs
from kaggle_src.find_inputs import Competition
from kaggle_src.load_images import LoadedImages
from kaggle_src.pictures import draw_pictures, make_thumbnails
from kaggle_src.report import confused_pairs

IMPORT = "import time; start = time.perf_counter(); import matplotlib.figure, matplotlib.backends.backend_agg; " \
         "print(time.perf_counter() - start)"


def synthetic_predictions(n, seed=0):
    """Out-of-fold probabilities (n, CLASSES), about 90% right, and the labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n)
    logits = rng.normal(0, 1.5, (n, CLASSES))
    logits[np.arange(n), labels] += 6
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    return probabilities / probabilities.sum(axis=1, keepdims=True), labels


def bench_pictures(images, size, pool, repeats, folder):
    """{thumbnails, draw, import_matplotlib, total}: the median seconds of each (total: their sum), for `images`
    training images at `size` px, `pool` of them distinct, and the pictures' total bytes."""
    jpegs = synthetic_jpegs(folder, pool)
    loaded = LoadedImages(jpegs, size)
    array = next(loaded.batches(pool))
    rows = [array[index % pool] for index in range(images)]
    probabilities, labels = synthetic_predictions(images)
    classes = [f"breed_{index}" for index in range(CLASSES)]
    competition = Competition(folder, classes, [f"id{index:05d}" for index in range(images)], labels, [])
    chosen = SimpleNamespace(option=SimpleNamespace(name="tta_geometric"), oof=probabilities, log_loss=0.3)
    confused = confused_pairs(probabilities, labels, classes)  # report.cv_metrics' work, not the pictures'
    seconds = {"thumbnails": [], "draw": []}
    for _ in range(repeats):
        start = time.perf_counter()
        thumbnails = make_thumbnails(rows)
        middle = time.perf_counter()
        drawn = draw_pictures(chosen, labels, competition, np.arange(images), thumbnails, confused, folder)
        seconds["thumbnails"].append(middle - start)
        seconds["draw"].append(time.perf_counter() - middle)
    seconds["import_matplotlib"] = [
        float(subprocess.run([sys.executable, "-c", IMPORT], capture_output=True, text=True, check=True).stdout)
        for _ in range(repeats)
    ]
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    files = sum((folder / drawn[name]["file"]).stat().st_size for name in drawn)
    return {**medians, "total": sum(medians.values()), "bytes": files}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--pool", type=int, default=200, help="distinct images among them")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        result = bench_pictures(args.images, args.size, args.pool, args.repeats, Path(folder))
    print(f"{args.images} images at {args.size} px, median of {args.repeats}: thumbnails {result['thumbnails']:.2f} s, "
          f"drawing {result['draw']:.2f} s, importing matplotlib {result['import_matplotlib']:.2f} s; "
          f"total {result['total']:.2f} s; pictures {result['bytes'] / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
