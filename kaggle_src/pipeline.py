"""The whole run, stage by stage: inputs -> images -> features -> heads -> ensembles -> files.

    python -m kaggle_src                                   # on Kaggle: /kaggle/input -> /kaggle/working
    python -m kaggle_src --input-root input_stub --output-dir working --dry-run
"""
import argparse
import importlib
import os
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager

import numpy as np

from .config import CommandLineParser, add_config_arguments, config_from_arguments, warn_unknown_arguments
from .ensembles import choose, score_options
from .errors import InputError, warn
from .feature_cache import find_saved_features, load_features, save_features
from .find_inputs import default_input_root, default_output_dir, find_inputs, on_kaggle, prepare_output_dir, read_competition
from .load_images import LoadedImages
from .predict import class_prior, predict_views
from .pseudo_labels import pseudo_labels
from .report import cv_metrics, report_markdown, run_metrics
from .write_outputs import SubmissionError, write_metrics, write_predictions, write_report

TF_IMPORT_NOISE = ("All log messages before absl::InitializeLog() is called", "oneDNN custom operations are on")
MAX_NAMED = 20  # unreadable images named one line each, per split; the rest in one line (metrics.json lists all)


def run(config, input_root, output_dir, build=None):
    """Run the pipeline with `config`; write submission.csv, the predictions to blend with, metrics.json and
    report.md to `output_dir`; return the metrics. `build`, in a built kernel, says what it was built from."""
    timer = StageTimer()
    # 1. Find the inputs: every check that can fail fast runs before any heavy work.
    with timer("find_inputs"):
        competition_dir, weights = find_inputs(input_root, config)
        competition = read_competition(competition_dir)
        if config.smoke:
            competition = competition.first(config.smoke)
        output_dir = prepare_output_dir(output_dir)
        saved = find_saved_features(competition, config)
    # TensorFlow only now that every check has passed, so that a stop takes a second and its line stands alone.
    import_quietly("tensorflow")
    from .extract_features import check_accelerator, describe_runtime
    from .pictures import draw_pictures
    from .train_heads import make_folds, train_heads
    from .train_logistic import train_logistic

    on_cpu = saved is None and check_accelerator(config, on_kaggle())
    n_classes = len(competition.classes)
    print(f"{competition_dir}: {len(competition.train_ids)} train, {len(competition.test_ids)} test images, "
          f"{n_classes} classes; backbones {', '.join(config.backbones)} at {config.image_size}px"
          + (" (dry run: random-init weights)" if config.dry_run else ""))

    # 2-3. The features of every image: extracted (and saved), or in a heads-only run read as saved.
    features, failed, extraction, thumbnails = features_for(competition, weights, saved, on_cpu, output_dir, build,
                                                            config, timer)
    for split in ("train", "test"):
        warn_unreadable(competition, split, failed[split], config)

    # 4. Train one head per fold and view on the readable training images, and (unless turned off) one
    # logistic regression per fold; keep the out-of-fold predictions of each on every view.
    readable = np.delete(np.arange(len(competition.train_ids)), failed["train"])
    labels, train = competition.train_labels[readable], features["train"][readable]
    folds = make_folds(labels, config)
    with timer("train_heads"):
        heads, oof = train_heads(train, labels, folds, n_classes, config)
    pseudo = None
    if config.pseudo_labels != "off":  # a second round of heads, on test rows too (pseudo_labels.py)
        with timer("pseudo_labels"):
            readable_test = np.delete(np.arange(len(competition.test_ids)), failed["test"])
            pseudo = pseudo_labels(heads, features["test"], readable_test, config.pseudo_labels, config.seed)
            print(f"pseudo-labels ({config.pseudo_labels}): {np.mean([len(rows) for rows in pseudo.rows]):.0f} test "
                  f"rows a fold; second round of heads")
            heads, oof = train_heads(train, labels, folds, n_classes, config, pseudo)
    families = {"heads": (heads, oof)}
    if config.logistic:
        with timer("train_logistic"):
            families["logistic"] = train_logistic(train, labels, folds, n_classes, config)

    # 5. Predict the test set with every head on every view; score each ensembling option out of fold
    # and take the best. An unreadable test image gets the class prior.
    with timer("predict"):
        predictions = {name: (family_oof, predict_views(family_heads, features["test"]))
                       for name, (family_heads, family_oof) in families.items()}
        if pseudo is not None:  # each test row from the heads that did not train on it
            predictions["heads"] = (oof, pseudo.own_fold(predictions["heads"][1]))
    with timer("ensembles"):
        options = score_options(predictions, labels, folds)
        chosen = choose(options, labels, config)
        for scored in options:
            scored.test[failed["test"]] = class_prior(labels, n_classes)

    # 6. Write the predictions, then the metrics and the report.
    with timer("write"):
        write_predictions(options, chosen, competition, readable, output_dir, config)
    cv = cv_metrics(competition, failed, labels, heads, oof, options, chosen, config)
    with timer("pictures"):
        cv["pictures"] = draw_pictures(chosen, labels, competition, readable, thumbnails, cv["confused"], output_dir)
    metrics = run_metrics(cv, timer.seconds(), describe_runtime(extraction), config, build)
    write_metrics(metrics, output_dir / "metrics.json")
    write_report(report_markdown(metrics), output_dir / "report.md")
    return metrics


class StageTimer:
    """Wall time per stage, summed over each time a stage runs (`with timer(name):`), and since the run began."""

    def __init__(self):
        self.started, self.per_stage = time.perf_counter(), defaultdict(float)

    @contextmanager
    def __call__(self, name):
        start = time.perf_counter()
        yield
        self.per_stage[name] += time.perf_counter() - start

    def seconds(self):
        """{stage: seconds} in the order the stages first ran, then the wall time so far as total (stages overlap:
        not their sum)."""
        seconds = {name: round(value, 2) for name, value in self.per_stage.items()}
        return {**seconds, "total": round(time.perf_counter() - self.started, 2)}


def features_for(competition, weights, saved, on_cpu, output_dir, build, config, timer):
    """Each split's features (n, views, features), the indices of its unreadable images, how they were extracted
    and the training images' thumbnails for the pictures (both None when read).

    A heads-only run reads the features `saved` ((folder, manifest): find_saved_features). Otherwise each split
    loads as uint8 in background threads and its features are extracted batch by batch as the images come in,
    with one extractor, built once (random-init backbones differ on every build) from the `weights` files, on
    the CPU if `on_cpu` (with a warning); then saved to `output_dir` for heads-only runs, unless a smoke run.
    """
    if saved is not None:
        folder, manifest = saved
        with timer("load_features"):
            features, failed = load_features(folder, manifest)
        print(f"features from {folder}: {', '.join(manifest['backbones'])}, extracted by {manifest['package_commit']}")
        return features, failed, None, None
    import keras

    from .extract_features import build_extractor, describe_extractor, estimate_seconds, extract_features
    from .pictures import make_thumbnails

    keras.utils.set_random_seed(config.seed)
    with timer("extract_features"):
        extractor = build_extractor(config, weights)
        extraction = {**describe_extractor(extractor), "batch_size": {}}
    if on_cpu:
        n_images = len(competition.train_ids) + len(competition.test_ids)
        warn(f"no GPU: extracting the features of {n_images} images on the CPU, about "
             f"{estimate_seconds(extractor, n_images) / 60:.0f} min at the pace of a first batch")
    features, failed = {}, {}
    for split in ("train", "test"):
        with timer("extract_features"):  # loading runs behind it: see seconds.load_images for its own time
            images = LoadedImages(competition.image_paths(split), config.image_size, config.n_jobs, desc=split)
            features[split], extraction["batch_size"][split] = extract_features(
                extractor, images, config.extract_batch_size
            )
        timer.per_stage["load_images"] += images.seconds
        failed[split] = images.failed
        if split == "train":  # small copies for the pictures, so that the full-size array can go
            with timer("pictures"):
                thumbnails = make_thumbnails(images.array)
        del images
    if not config.smoke:  # a smoke run's features cover a few images: of no use to a heads-only run
        with timer("save_features"):
            commit = build["commit"] if build else "unbuilt (python -m kaggle_src)"
            features = save_features(output_dir, features, competition, config, weights, failed, commit)
    return features, failed, extraction, thumbnails


def import_quietly(name):
    """Import module `name` (TensorFlow) with TensorFlow's start-up notices (TF_IMPORT_NOISE) left out of the log:
    from 2.19 it prints them, twice, whatever TF_CPP_MIN_LOG_LEVEL says. Every other line written to stderr
    meanwhile, by Python or by C++, is passed on."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            importlib.import_module(name)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not any(noise in line for noise in TF_IMPORT_NOISE):
                    sys.stderr.write(line)


def warn_unreadable(competition, split, failed, config):
    """Warn about the images of `split` at indices `failed`, by id and file: training ones are left out of
    training, test ones get the class prior. Stop if too few training images are left for config.n_folds-fold CV."""
    ids, paths = competition.ids(split), competition.image_paths(split)
    consequence = "left out of training" if split == "train" else "its row gets the training class prior"
    for index in failed[:MAX_NAMED]:
        warn(f"{split} id {ids[index]}: {paths[index]} is missing, empty or not decodable; {consequence}")
    if len(failed) > MAX_NAMED:
        warn(f"{len(failed) - MAX_NAMED} more unreadable {split} images; metrics.json lists them all")
    if split == "train":
        readable_labels = np.delete(competition.train_labels, failed)
        if np.bincount(readable_labels, minlength=1).max() < config.n_folds:
            raise InputError(
                f"{competition.directory / split}: {len(readable_labels)} of {len(ids)} images readable; "
                f"{config.n_folds}-fold CV needs at least {config.n_folds} of one breed"
            )


EPILOG = """files a run writes to --output-dir:
  submission.csv          the submitted option's test predictions, in sample_submission.csv's order
  oof_predictions.csv     its out-of-fold predictions: id, breed (the true one), then one column per breed
  test_predictions/<option>.csv
                          every ensembling option's test predictions, in submission.csv's format
  metrics.json            a one-line summary, every ensembling option's out-of-fold scores, per-fold scores,
                          counts, times, config
  report.md               the same in short: the summary, the options, the most-confused breeds, the times
  mistakes.jpg            the training photos of the highest out-of-fold log loss, with true and predicted breeds
  confused.jpg            photos of the most-confused breed pairs, those most taken for the other first
  calibration.png         the submitted option's reliability diagram out of fold, with its log loss
  features.npz, features_manifest.json
                          the extracted features (not in a --features run), for heads-only runs

Arguments it does not know are ignored, each with a warning naming the closest flag: Kaggle may pass some."""


def main(argv=None, settings=None, build=None):
    """Command-line entry: parse flags (warning of unknown ones and ignoring them, as Kaggle may add some), run, report.

    `settings` are Config values baked in by build_kernel.py; flags given on the command line win.
    """
    if hasattr(sys.stdout, "reconfigure"):  # in a log (Kaggle's), stdout's lines keep their place among stderr's
        sys.stdout.reconfigure(line_buffering=True)
    parser = CommandLineParser(
        prog="kaggle_src",
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    add_config_arguments(parser)
    args, unknown = parser.parse_known_args(argv)
    warn_unknown_arguments(unknown)
    try:
        config = config_from_arguments(args, settings)
        output_dir = args.output_dir or default_output_dir()
        metrics = run(config, args.input_root or default_input_root(), output_dir, build)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except SubmissionError as error:
        print(f"error: submission.csv not written: {error}", file=sys.stderr)
        return 1
    print(
        "out-of-fold log loss: "
        + ", ".join(f"{name} {scores['log_loss']:.4f}" for name, scores in metrics["options"].items())
        + f" (chance {metrics['chance_log_loss']:.4f})"
    )
    print(metrics["summary"])
    if config.smoke:
        print(f"wrote {output_dir}/metrics.json, report.md and the pictures (a smoke run writes no submission.csv)")
    else:
        print(f"wrote {output_dir}/submission.csv, oof_predictions.csv, test_predictions/, metrics.json, report.md "
              "and the pictures")
    return 0
