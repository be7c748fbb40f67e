"""Dog Breed Identification by transfer learning: one offline Kaggle kernel.

Reads the features that the dog-breed-xception-inception kernel saved (its output, attached as
an input), checks them against the competition, trains 5-fold x 2-view dropout +
softmax heads on the CPU, and writes the ensemble with the best out-of-fold log loss to
/kaggle/working/submission.csv, with the cross-validated scores in metrics.json and report.md.

Built by build_kernel.py from the kaggle_src package; edit the package, not this file.
    source commit:   e7ca824
    sources sha256:  074e873c5761e1fd3a36df808b26c955938460e421fedd5069df1991397e6210
    build settings:  features='/kaggle/input'
    configuration:   backbones=('xception', 'inception_v3'), image_size=448, flips=True, n_folds=5,
                     dropout=0.5, learning_rate=0.001, max_epochs=50, patience=5, members_per_head=3,
                     standardise=True, pseudo_labels='off', logistic=True, ensemble='',
                     head_batch_size=128, extract_batch_size=0, precision='auto', xla='auto',
                     n_jobs=-1, seed=2017, dry_run=False, smoke=0, features='/kaggle/input',
                     weights_dataset=''
Run here, from the repo's root, after the full kernel's dry run wrote working/:
    python kernels/dog-breed-heads/kernel.py --input-root input_stub --output-dir heads --dry-run --features working
On Kaggle:  no arguments: /kaggle/input (the full kernel's output attached) -> /kaggle/working.
"""
import importlib.abc
import importlib.util
import linecache
import sys

BUILD_SETTINGS = {'features': '/kaggle/input'}  # Config values chosen at build time; command-line flags still win
BUILD = {'commit': 'e7ca824', 'sources_sha256': '074e873c5761e1fd3a36df808b26c955938460e421fedd5069df1991397e6210', 'settings': {'features': '/kaggle/input'}}

# The kaggle_src package, one module per string; each string starts after the newline that follows r'''.
SOURCES = {}
# ---- kaggle_src/__init__.py ----
SOURCES['kaggle_src'] = r'''
"""Dog Breed Identification by transfer learning: Xception + InceptionV3 features, 5-fold x 2-view dense heads.

Stages, one module each: find_inputs, load_images, extract_features, train_heads, predict, ensembles,
write_outputs (with report); pipeline runs them in order. Run with `python -m kaggle_src --help`.

Importing the package sets what TensorFlow and Keras read once, at their import: Keras runs on TensorFlow
(Kaggle's image ships JAX and PyTorch too), TensorFlow takes GPU memory as it needs it rather than all of it
at first use, and its start-up chatter stays out of the log.
"""
import os

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
'''

# ---- kaggle_src/errors.py ----
SOURCES['kaggle_src.errors'] = r'''
"""What a run says on stderr besides its results: a stop (InputError, one line before any heavy work), a warning
it survives, and a long stage's progress bar."""
import sys

from tqdm import tqdm

PROGRESS_SECONDS = 10  # a progress bar's refresh in a log that is no terminal


class InputError(ValueError):
    """Bad configuration or input files: reported as one line, before any heavy work starts."""


def warn(message):
    """Report a problem the run survives: one line on stderr, on a line of its own even while a progress bar runs."""
    tqdm.write(f"warning: {message}", file=sys.stderr)


def progress(total, desc, unit):
    """A progress bar on stderr with a rate and an ETA. In a log that is no terminal (Kaggle's), a line every
    PROGRESS_SECONDS at most, so that a long stage does not flood it; close it before printing anything else."""
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                mininterval=2 if sys.stderr.isatty() else PROGRESS_SECONDS)
'''

# ---- kaggle_src/config.py ----
SOURCES['kaggle_src.config'] = r'''
"""Every setting of a run in one place, with the seed's values as defaults, checked at the door."""
import argparse
import dataclasses
import difflib
from dataclasses import dataclass
from pathlib import Path

from .backbones import BACKBONES, KERAS_PRETRAINED
from .ensembles import OPTIONS, scored_names
from .errors import InputError, warn
from .pseudo_labels import HARD_CONFIDENCE, PSEUDO_LABELS

DEFAULT_BACKBONES = ("xception", "inception_v3")  # the seed's pair
DRY_RUN_IMAGE_SIZE = 96  # what --dry-run uses unless --image-size is given
IMAGE_SCALE = 1.5  # the default image size over the backbones' largest native size: on real dog photos, frozen
# ImageNet features of the dogs seen larger gave a lower held-out log loss (benchmarks/README.md, quality on real photos)
PRECISIONS = ("auto", "float32", "float16", "bfloat16")
XLA_MODES = ("auto", "on", "off")


def setting(default, meaning, metavar=None, shown_default=None):
    """A Config field: its default and, beside it, what its flag means, for --help and the README's table.

    `metavar` names the flag's value (None: an on/off switch, --name / --no-name); `shown_default` says what
    applies where that is not `default` itself (a dry run's, or a value worked out at run time).
    """
    return dataclasses.field(default=default, metadata={"help": meaning, "metavar": metavar, "default": shown_default})


# The flags that are not settings of the method but say where a run reads and writes: {name: (metavar,
# default, meaning)}, as for a setting. Their defaults are find_inputs.default_input_root and default_output_dir.
LOCATIONS = {
    "input_root": ("DIR", "/kaggle/input if it exists, else input_stub",
                   "where the competition and the weights files are searched for"),
    "output_dir": ("DIR", "/kaggle/working if it exists, else working", "where the run writes its files"),
}


@dataclass(frozen=True)
class Config:
    """A run's settings. Each field's default sits beside its flag's meaning (see `setting`): the one text that
    --help shows and the README's Configuration table repeats."""

    backbones: tuple[str, ...] = setting(
        DEFAULT_BACKBONES, f"comma-separated backbone names, their features concatenated in this order: "
        f"{', '.join(BACKBONES)}", "LIST",
    )
    image_size: int = setting(
        round(IMAGE_SCALE * max(BACKBONES[name].native_size for name in DEFAULT_BACKBONES)),
        "side the images are loaded at; each backbone runs at its native size scaled alike (at least "
        + ", ".join(f"{BACKBONES[name].min_size} for {name}" for name in DEFAULT_BACKBONES) + ")",
        "N",
        f"{IMAGE_SCALE:g} times the backbones' largest native size "
        f"({round(IMAGE_SCALE * max(BACKBONES[name].native_size for name in DEFAULT_BACKBONES))} for the default pair); "
        f"{DRY_RUN_IMAGE_SIZE} with --dry-run",
    )
    flips: bool = setting(True, "also extract, train on and predict the horizontally flipped view")
    n_folds: int = setting(5, "CV folds (at least 2)", "N")
    dropout: float = setting(0.5, "head dropout rate, in [0, 1)", "X")
    learning_rate: float = setting(1e-3, "Adam learning rate", "X")
    max_epochs: int = setting(50, "epochs per head at most", "N")
    patience: int = setting(5, "epochs without a better validation loss before a head stops", "N")
    members_per_head: int = setting(
        3, "heads per fold and view, trained apart, then averaged into one (their geometric mean)", "N",
    )
    standardise: bool = setting(
        True, "heads centre and scale each feature by their training fold's mean and standard deviation (the "
        "seed's heads did not: --no-standardise); on real ImageNet features it lowered the held-out log loss "
        "of the seed's heads, and random-init features (dry runs) need it",
    )
    pseudo_labels: str = setting(
        "off", f"a second round of heads on the training rows plus test rows, the first round's predictions as their "
        f"targets: each fold's heads train on the test rows outside its part of the test set, which they alone "
        f"predict, towards its own first-round heads' predictions: one of {', '.join(PSEUDO_LABELS)}; soft: the "
        f"predicted probabilities; hard: the rows predicted at {HARD_CONFIDENCE:g} or more, as that breed",
        "MODE",
    )
    logistic: bool = setting(
        True, "also fit logistic regressions (on the GPU when there is one), on every view, converged, their C searched from 10 "
        "(between 0.01 and 1000) and cross-fitted, refitted on every row for the test: the logistic option"
    )
    ensemble: str = setting(
        "", "the ensembling option to submit instead of the one chosen out of fold (every option is still "
        f"scored): one of {', '.join(option.name for option in OPTIONS)}; the tta ones need "
        "--flips, logistic and heads_logistic --logistic", "NAME",
        "none: the preferred fixed recipe within one standard error of the best one",
    )
    head_batch_size: int = setting(128, "head training batch", "N")
    extract_batch_size: int = setting(
        0, "images per feature-extraction batch; 0: the most that fits a 16 GB T4 per GPU for these backbones "
        "and size (without a GPU: what fits 4 GiB of RAM, at most 64)", "N"
    )
    precision: str = setting(
        "auto", f"backbones' compute dtype, one of {', '.join(PRECISIONS)}; auto: float16 on compute capability "
        "7.x (T4), bfloat16 on 8.0 and newer, float32 on CPU", "P",
    )
    xla: str = setting(
        "auto", f"compile the extractor with XLA, one of {', '.join(XLA_MODES)}; auto: Keras' choice (on for one "
        "GPU, off on CPU and with several GPUs)", "MODE",
    )
    n_jobs: int = setting(-1, "image-decoding threads; -1: one per core", "N")
    seed: int = setting(2017, "folds, head initialisation and (dry run) backbone initialisation", "N")
    dry_run: bool = setting(
        False, f"random-init backbones (no weights files, for CPU and CI) and {DRY_RUN_IMAGE_SIZE} px images, "
        "unless --image-size is given",
    )
    smoke: int = setting(
        0, "a smoke test of the real path before a full run spends GPU quota: N training images per breed and N "
        "test images; writes metrics.json and report.md, marked as a smoke run, and no submission.csv (at least "
        "--n-folds)", "N", "0: off, every image",
    )
    features: str = setting(
        "", "heads-only: search DIR for a saved features_manifest.json and train on those features instead of "
        "extracting", "DIR",
    )
    weights_dataset: str = setting(
        "", "the Kaggle dataset that holds every backbone's weights file", "OWNER/SLUG",
        f"none: each backbone's known one ({KERAS_PRETRAINED} for the default pair)",
    )

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not _has_type(value, field.type):
                raise InputError(f"config {field.name}={value!r}: expected {_type_name(field.type)}")
        unknown = [name for name in self.backbones if name not in BACKBONES]
        if unknown or not self.backbones:
            raise InputError(
                f"config backbones={','.join(self.backbones)!r}: expected one or more of {', '.join(BACKBONES)}"
            )
        smallest = max(
            -(-BACKBONES[name].min_size * self.native_size // BACKBONES[name].native_size) for name in self.backbones
        )
        if self.image_size < smallest:
            raise InputError(f"config image_size={self.image_size}: expected at least {smallest} for these backbones")
        _check_at_least(self, "n_folds", 2)
        for name in ("max_epochs", "members_per_head", "head_batch_size"):
            _check_at_least(self, name, 1)
        for name in ("patience", "extract_batch_size"):
            _check_at_least(self, name, 0)
        if self.precision not in PRECISIONS:
            raise InputError(f"config precision={self.precision!r}: expected one of {', '.join(PRECISIONS)}")
        if self.pseudo_labels not in PSEUDO_LABELS:
            raise InputError(f"config pseudo_labels={self.pseudo_labels!r}: expected one of {', '.join(PSEUDO_LABELS)}")
        if self.xla not in XLA_MODES:
            raise InputError(f"config xla={self.xla!r}: expected one of {', '.join(XLA_MODES)}")
        if not 0 <= self.dropout < 1:
            raise InputError(f"config dropout={self.dropout}: expected a value in [0, 1)")
        if not self.learning_rate > 0:
            raise InputError(f"config learning_rate={self.learning_rate}: expected a positive number")
        scored = scored_names(self.flips, self.logistic)
        if self.ensemble and self.ensemble not in scored:
            raise InputError(
                f"config ensemble={self.ensemble!r}: expected one of the options these settings score: "
                + ", ".join(scored)
            )
        if 0 < self.smoke < self.n_folds or self.smoke < 0:
            raise InputError(f"config smoke={self.smoke}: expected 0 (off) or at least n_folds={self.n_folds}")
        if self.smoke and self.features:
            raise InputError(f"config smoke={self.smoke}: expected no features folder (a smoke run tests extraction)")
        if self.n_jobs == 0 or self.n_jobs < -1:
            raise InputError(f"config n_jobs={self.n_jobs}: expected a positive count or -1 (all cores)")

    @property
    def native_size(self):
        """The largest native input size among the backbones: the size `image_size` stands for."""
        return max(BACKBONES[name].native_size for name in self.backbones)

    @property
    def input_sizes(self):
        """{backbone: its input side}: its native size scaled by image_size / native_size, so that each
        backbone sees the images at its own resolution and a bigger image_size enlarges them all."""
        return {name: round(BACKBONES[name].native_size * self.image_size / self.native_size) for name in self.backbones}

    @property
    def weights_datasets(self):
        """{backbone: the Kaggle dataset to attach for its weights}: weights_dataset if set, else the known one."""
        return {name: self.weights_dataset or BACKBONES[name].dataset for name in self.backbones}

    @property
    def views(self):
        """Names of the image views features are extracted for, in feature order."""
        return ("original", "flipped") if self.flips else ("original",)

    def as_dict(self):
        return dataclasses.asdict(self)


def make_config(**overrides):
    """A Config from the defaults and `overrides`. Unless given, the image size is IMAGE_SCALE times the backbones'
    largest native size, or for a dry run the small dry-run size."""
    if overrides.get("dry_run"):
        overrides = {"image_size": DRY_RUN_IMAGE_SIZE, **overrides}
    if "image_size" in overrides:
        return Config(**overrides)
    config = Config(**overrides)
    return dataclasses.replace(config, image_size=round(IMAGE_SCALE * config.native_size))


def parse_value(name, text):
    """Turn the text `text` into a value for the Config field `name` (for flags and key=value settings)."""
    field = {f.name: f for f in dataclasses.fields(Config)}.get(name)
    if field is None:
        raise InputError(f"config key {name!r}: expected one of {', '.join(f.name for f in dataclasses.fields(Config))}")
    try:
        if field.type is bool:
            lowered = text.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return lowered in ("true", "1", "yes")
        if field.type == tuple[str, ...]:
            return tuple(part.strip() for part in text.split(",") if part.strip())
        return field.type(text)
    except ValueError:
        raise InputError(f"config {name}={text!r}: expected {_type_name(field.type)}") from None


def flags():
    """{name: (metavar, default as it applies, meaning)} of every command-line flag, in --help's order; a None
    metavar marks an on/off switch. The one source of --help and of the README's Configuration table."""
    return {
        **LOCATIONS,
        **{
            field.name: (field.metadata["metavar"], field.metadata["default"] or _default_text(field.default),
                         field.metadata["help"])
            for field in dataclasses.fields(Config)
        },
    }


def add_config_arguments(parser):
    """The flags (--input-root, --image-size, --flips/--no-flips, ...), each defaulting to unset, with its
    meaning and default as --help shows them."""
    for name, (metavar, default, meaning) in flags().items():
        flag, text = "--" + name.replace("_", "-"), f"{meaning} (default: {default})"
        if metavar is None:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            parser.add_argument(flag, dest=name, metavar=metavar, type=Path if name in LOCATIONS else str,
                                default=None, help=text)


def config_from_arguments(args, settings=None):
    """The Config that parsed flags ask for: the defaults, then `settings`, then each flag given. A flag's text
    is read here, by parse_value, so that a bad value stops as any bad setting does: one line naming it."""
    given = {}
    for field in dataclasses.fields(Config):
        value = getattr(args, field.name)
        if value is not None:
            given[field.name] = value if field.type is bool else parse_value(field.name, value)
    return make_config(**{**(settings or {}), **given})


def warn_unknown_arguments(unknown):
    """Warn of each unknown flag in `unknown` (what parse_known_args left, in order), with the values after it,
    naming the closest known flag if one is close. They are ignored, not stopped at: Kaggle may pass some."""
    known = [
        flag
        for name, (metavar, _, _) in flags().items()
        for flag in ["--" + name.replace("_", "-")] + (["--no-" + name.replace("_", "-")] if metavar is None else [])
    ]
    groups = []
    for argument in unknown:
        starts_a_flag = argument.startswith("-") and not argument[1:2].isdigit()  # -1 is a value
        if starts_a_flag or not groups:
            groups.append([argument])
        else:
            groups[-1].append(argument)
    for group in groups:
        closest = difflib.get_close_matches(group[0].split("=")[0], known, n=1)
        hint = f" (did you mean {closest[0]}?)" if closest else ""
        warn(f"argument {' '.join(group)}: unknown{hint}; ignored")


class CommandLineParser(argparse.ArgumentParser):
    """argparse's parser, but a mistake it finds (a flag without its value, ...) stops the run as every other
    stop does: one line, `error: ...`, on stderr, exit code 2, without the usage block."""

    def error(self, message):
        self.exit(2, f"error: {message}\n")


def _has_type(value, expected):
    if expected == tuple[str, ...]:
        return isinstance(value, tuple) and all(isinstance(item, str) for item in value)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def _type_name(expected):
    if expected == tuple[str, ...]:
        return "a comma-separated list of names"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[expected]


def _check_at_least(config, name, minimum):
    if getattr(config, name) < minimum:
        raise InputError(f"config {name}={getattr(config, name)}: expected at least {minimum}")


def _default_text(value):
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value) if value != "" else "none"
'''

# ---- kaggle_src/backbones.py ----
SOURCES['kaggle_src.backbones'] = r'''
"""The pretrained backbones features can come from: what Keras calls them, how they want their input,
and which file (and Kaggle dataset) holds their ImageNet weights.

Pure data, no TensorFlow import, so that configuration and input checks stay instant. Xception and
InceptionV3 are the seed's pair; every other keras.applications backbone is available by name, and
any subset is concatenated.
"""
from dataclasses import dataclass

KERAS_PRETRAINED = "gaborfodor/keras-pretrained-models"  # holds the classic backbones' .h5 files

# How each family scales RGB uint8 input, as its keras.applications preprocess_input does:
#   "tf": x / 127.5 - 1;  "caffe": BGR order, ImageNet means subtracted;  "torch": x / 255, then
#   ImageNet mean and std;  "raw": the model scales its own input (EfficientNet, ConvNeXt, MobileNetV3).
PREPROCESSING = ("tf", "caffe", "torch", "raw")


@dataclass(frozen=True)
class Backbone:
    constructor: str  # attribute of keras.applications
    weights_file: str  # Keras' own file name for the ImageNet no-top weights
    native_size: int  # the input side its ImageNet weights were trained at
    features: int  # width of its global-average-pooled output
    preprocessing: str  # one of PREPROCESSING
    min_size: int = 32  # smallest input side the architecture accepts
    dataset: str = ""  # a Kaggle dataset known to hold weights_file ("": none known; set weights_dataset)
    md5: str = ""  # the md5 Keras publishes for weights_file ("": none published under that name)


def _keras_file(stem):
    return f"{stem}_weights_tf_dim_ordering_tf_kernels_notop.h5"


BACKBONES = {
    "xception": Backbone(
        "Xception", _keras_file("xception"), 299, 2048, "tf", 71, KERAS_PRETRAINED, "b0042744bf5b25fce3cb969f33bebb97"
    ),
    "inception_v3": Backbone(
        "InceptionV3", _keras_file("inception_v3"), 299, 2048, "tf", 75, KERAS_PRETRAINED,
        "bcbd6486424b2319ff4ef7d526e38f63",
    ),
    "inception_resnet_v2": Backbone(
        "InceptionResNetV2", _keras_file("inception_resnet_v2"), 299, 1536, "tf", 75, KERAS_PRETRAINED,
        "d19885ff4a710c122648d3b5c3b684e4",
    ),
    "nasnet_large": Backbone("NASNetLarge", "NASNet-large-no-top.h5", 331, 4032, "tf", 32, KERAS_PRETRAINED),
    "nasnet_mobile": Backbone("NASNetMobile", "NASNet-mobile-no-top.h5", 224, 1056, "tf"),
    "resnet50": Backbone("ResNet50", _keras_file("resnet50"), 224, 2048, "caffe"),
    "resnet101": Backbone("ResNet101", _keras_file("resnet101"), 224, 2048, "caffe"),
    "resnet152": Backbone("ResNet152", _keras_file("resnet152"), 224, 2048, "caffe"),
    "resnet50_v2": Backbone("ResNet50V2", _keras_file("resnet50v2"), 224, 2048, "tf"),
    "resnet101_v2": Backbone("ResNet101V2", _keras_file("resnet101v2"), 224, 2048, "tf"),
    "resnet152_v2": Backbone("ResNet152V2", _keras_file("resnet152v2"), 224, 2048, "tf"),
    "vgg16": Backbone("VGG16", _keras_file("vgg16"), 224, 512, "caffe"),
    "vgg19": Backbone("VGG19", _keras_file("vgg19"), 224, 512, "caffe"),
    "densenet121": Backbone("DenseNet121", _keras_file("densenet121"), 224, 1024, "torch"),
    "densenet169": Backbone("DenseNet169", _keras_file("densenet169"), 224, 1664, "torch"),
    "densenet201": Backbone("DenseNet201", _keras_file("densenet201"), 224, 1920, "torch"),
    "mobilenet_v2": Backbone(
        "MobileNetV2", "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5", 224, 1280, "tf"
    ),
    **{
        f"efficientnet_b{index}": Backbone(f"EfficientNetB{index}", f"efficientnetb{index}_notop.h5", size, width, "raw")
        for index, (size, width) in enumerate(
            [(224, 1280), (240, 1280), (260, 1408), (300, 1536), (380, 1792), (456, 2048), (528, 2304), (600, 2560)]
        )
    },
    **{
        f"efficientnet_v2_{name}": Backbone(f"EfficientNetV2{name.upper()}", f"efficientnetv2-{name}_notop.h5", size, 1280, "raw")
        for name, size in [("s", 384), ("m", 480), ("l", 480)]
    },
    **{
        f"convnext_{name}": Backbone(f"ConvNeXt{suffix}", f"convnext_{name}_notop.h5", 224, width, "raw")
        for name, suffix, width in [("tiny", "Tiny", 768), ("small", "Small", 768), ("base", "Base", 1024),
                                    ("large", "Large", 1536), ("xlarge", "XLarge", 2048)]
    },
}
'''

# ---- kaggle_src/find_inputs.py ----
SOURCES['kaggle_src.find_inputs'] = r'''
"""Stage 1: find the competition files and the backbone weights under an input root, and read the tables.

Kaggle has changed how it nests /kaggle/input before, so nothing here hard-codes a path below the
root: the competition folder is whichever folder holds both CSVs, and each weights file is found by
its Keras file name.
"""
import dataclasses
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .backbones import BACKBONES
from .errors import InputError, warn

KAGGLE_INPUT = Path("/kaggle/input")
KAGGLE_WORKING = Path("/kaggle/working")
LABELS_CSV = "labels.csv"
SAMPLE_SUBMISSION_CSV = "sample_submission.csv"


@dataclass(frozen=True)
class Competition:
    """The competition's tables, with classes in sample_submission.csv's column order."""

    directory: Path
    classes: list
    train_ids: list
    train_labels: np.ndarray  # index into `classes` for each train id
    test_ids: list  # in sample_submission.csv's row order

    def ids(self, split):
        return self.train_ids if split == "train" else self.test_ids

    def image_paths(self, split):
        return [self.directory / split / f"{image_id}.jpg" for image_id in self.ids(split)]

    def first(self, n):
        """The competition cut to the first `n` training images of each breed and the first `n` test images: what
        a smoke run runs on."""
        per_breed = [np.flatnonzero(self.train_labels == label)[:n] for label in range(len(self.classes))]
        keep = np.sort(np.concatenate(per_breed))
        return dataclasses.replace(self, train_ids=[self.train_ids[index] for index in keep],
                                   train_labels=self.train_labels[keep], test_ids=self.test_ids[:n])


def on_kaggle():
    """Whether this runs in a Kaggle session (its /kaggle/working exists)."""
    return KAGGLE_WORKING.is_dir()


def default_input_root():
    return KAGGLE_INPUT if KAGGLE_INPUT.is_dir() else Path("input_stub")


def default_output_dir():
    return KAGGLE_WORKING if on_kaggle() else Path("working")


def find_inputs(input_root, config):
    """Return (competition folder, {backbone: weights file}) found under `input_root`.

    Dry runs use random-init backbones and need no weights files. A missing file is an
    InputError naming it and the dataset that holds it: nothing is ever downloaded.
    """
    input_root = Path(input_root)
    if not input_root.is_dir():
        raise InputError(f"input root {input_root}: not a folder")
    wanted = {BACKBONES[name].weights_file: name for name in config.backbones}
    competition_dirs, lone_csvs, weights = [], [], {}
    for folder, subfolders, files in os.walk(input_root, followlinks=True):
        subfolders.sort()
        csvs = sorted({LABELS_CSV, SAMPLE_SUBMISSION_CSV} & set(files))
        if len(csvs) == 2:
            competition_dirs.append(Path(folder))
            subfolders[:] = [name for name in subfolders if name not in ("train", "test")]
        elif csvs:
            lone_csvs.append(Path(folder) / csvs[0])
        for name in sorted(set(files) & wanted.keys()):
            weights.setdefault(wanted[name], Path(folder) / name)
    if not competition_dirs and lone_csvs:
        other = SAMPLE_SUBMISSION_CSV if lone_csvs[0].name == LABELS_CSV else LABELS_CSV
        raise InputError(f"{lone_csvs[0].with_name(other)}: file not found (beside {lone_csvs[0].name})")
    if not competition_dirs:
        raise InputError(
            f"input root {input_root}: no folder holds both {LABELS_CSV} and {SAMPLE_SUBMISSION_CSV}; "
            "attach the dog-breed-identification competition"
        )
    if config.dry_run or config.features:  # random-init backbones, or no backbones at all
        weights = {}
    else:
        for name in config.backbones:
            if name not in weights:
                raise InputError(
                    f"weights file {BACKBONES[name].weights_file} not found under {input_root}; "
                    + (f"attach the Kaggle dataset {config.weights_datasets[name]}" if config.weights_datasets[name]
                       else "attach a Kaggle dataset that holds it and set weights_dataset")
                    + " (or use --dry-run)"
                )
            check_weights_hash(name, weights[name])
    return min(competition_dirs, key=lambda path: len(path.parts)), weights


def check_weights_hash(name, path):
    """Warn when backbone `name`'s weights file differs from the one Keras publishes (where it publishes an md5):
    a copy on Kaggle may differ and still be right, so loading it decides, not the hash."""
    expected = BACKBONES[name].md5
    if not expected:
        return
    digest = hashlib.md5()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(2**22), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        warn(f"{path}: md5 {digest.hexdigest()}, not the {expected} that Keras publishes for "
             f"{BACKBONES[name].weights_file}; loading it anyway")


def read_competition(directory):
    """Read labels.csv and sample_submission.csv, check that they agree and that the image folders exist.

    An id listed twice in labels.csv with the same breed is counted once, with a warning; with two
    breeds it stops the run. Cells are stripped of surrounding spaces; a BOM and CRLF line ends are fine.
    """
    directory = Path(directory)
    labels = _read_csv(directory / LABELS_CSV, required=("id", "breed"))
    sample = _read_csv(directory / SAMPLE_SUBMISSION_CSV, required=("id",))
    classes = list(sample.columns[1:])
    if sample.columns[0] != "id" or not classes:
        raise InputError(f"{directory / SAMPLE_SUBMISSION_CSV}: expected columns id, then one per breed")
    _check_unique(sample["id"], directory / SAMPLE_SUBMISSION_CSV)
    labels = _drop_repeated_labels(labels, directory / LABELS_CSV)
    for split in ("train", "test"):
        if not (directory / split).is_dir():
            raise InputError(f"{directory / split}: folder not found; expected the {split} images as <id>.jpg there")
    unknown = sorted(set(labels["breed"]) - set(classes))
    if unknown:
        raise InputError(
            f"{directory / LABELS_CSV}: breed {unknown[0]!r} is not a column of {SAMPLE_SUBMISSION_CSV}"
            + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
        )
    class_index = {name: index for index, name in enumerate(classes)}
    return Competition(
        directory=directory,
        classes=classes,
        train_ids=labels["id"].tolist(),
        train_labels=labels["breed"].map(class_index).to_numpy(np.int64),
        test_ids=sample["id"].tolist(),
    )


def prepare_output_dir(path):
    """Create the output folder and make sure it can be written, before any heavy work."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise InputError(f"output dir {path}: cannot be written ({error.strerror or error})") from None
    return path


def _read_csv(path, required):
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        table = pd.read_csv(path, dtype=str, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not a readable CSV ({str(error).splitlines()[0]})") from None
    table.columns = [str(column).strip() for column in table.columns]
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise InputError(f"{path}: missing column {missing[0]!r} (has {', '.join(table.columns[:5])})")
    if table.empty:
        raise InputError(f"{path}: no rows")
    for column in required:
        table[column] = table[column].str.strip()
        blank = table.index[table[column].fillna("") == ""]
        if len(blank):
            raise InputError(f"{path}: data row {blank[0] + 1} has no {column}")
    return table


def _check_unique(ids, path):
    duplicated = ids[ids.duplicated()]
    if not duplicated.empty:
        raise InputError(f"{path}: id {duplicated.iloc[0]!r} appears more than once")


def _drop_repeated_labels(labels, path):
    """`labels` with each id once: a repeat with another breed is an InputError, one with the same breed a warning."""
    repeats = labels[labels["id"].duplicated(keep=False)]
    breeds = repeats.groupby("id", sort=False)["breed"].unique()
    conflicting = breeds[breeds.map(len) > 1]
    if len(conflicting):
        raise InputError(
            f"{path}: id {conflicting.index[0]!r} appears with different breeds ({', '.join(conflicting.iloc[0])})"
        )
    if len(breeds):
        more = f" and {len(breeds) - 1} more" if len(breeds) > 1 else ""
        warn(f"{path}: id {breeds.index[0]!r}{more} listed more than once with the same breed; counted once")
    return labels.drop_duplicates("id").reset_index(drop=True)
'''

# ---- kaggle_src/load_images.py ----
SOURCES['kaggle_src.load_images'] = r'''
"""Stage 2: decode every image into one preallocated uint8 RGB array, in background threads.

uint8 keeps the training set at 299x299 to 2.7 GB (float32 would be 11 GB); the cast and scaling
happen on the device, in the feature extractor. OpenCV decodes as BGR, so each image is turned to
RGB here, once. OpenCV releases the GIL while decoding and resizing, so threads scale across
cores and write straight into the shared array, with no copies between processes.

Loading starts at once and runs behind the caller: `LoadedImages.batches` hands out each batch as
soon as its images are in, so the GPU extracts features from one batch while the next are decoded.
"""
import threading
import time

import cv2
import numpy as np
from joblib import Parallel, delayed

from .errors import warn


def load_image(path, size):
    """One image as a (size, size, 3) uint8 RGB array, or None when the file is missing, empty or not decodable.

    The format comes from the bytes, not the name (a PNG behind .jpg decodes); greyscale, alpha and CMYK
    images become RGB, and EXIF orientation is applied. A truncated JPEG that OpenCV decodes in part
    (4.x does; 5.x refuses it) is used, with a warning naming the file.
    """
    try:
        data = np.fromfile(path, np.uint8)  # not cv2.imread: it logs its own line for a missing file
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    except (OSError, cv2.error):  # cv2.error: e.g. a header claiming more pixels than OpenCV's limit
        return None
    if image is None:
        return None
    if data[:2].tobytes() == b"\xff\xd8" and data[-2:].tobytes() != b"\xff\xd9":
        warn(f"{path}: JPEG without its end-of-image marker (truncated?); using the part that decodes")
    # Bilinear, as the seed's cv2.resize; INTER_AREA (slower) only where bilinear would alias badly.
    shrink = min(image.shape[:2]) / size
    image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink >= 2 else cv2.INTER_LINEAR)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class LoadedImages:
    """`paths` decoded in order into `array` (n, size, size, 3) uint8 by `n_jobs` threads, in the background.

    Rows of images that could not be read stay zero; their indices are in `failed` once loading is done. Its
    progress shows in the bar of whoever takes its batches (the extraction's).
    """

    def __init__(self, paths, size, n_jobs=-1, desc="images"):
        self.paths, self.size, self.n_jobs, self.desc = list(paths), size, n_jobs, desc
        self.array = np.zeros((len(self.paths), size, size, 3), np.uint8)
        self.failed = []
        self.seconds = 0.0  # wall time from the start to the last image in
        self._loaded = 0  # images 0 .. _loaded-1 are in
        self._error = None
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._load, name=f"load {desc}", daemon=True)
        self._thread.start()

    def __len__(self):
        return len(self.paths)

    def _load(self):
        def load_into(index):
            image = load_image(self.paths[index], self.size)
            if image is not None:
                self.array[index] = image
            return image is not None

        started = time.perf_counter()
        try:
            done = Parallel(n_jobs=self.n_jobs, prefer="threads", return_as="generator")(
                delayed(load_into)(index) for index in range(len(self.paths))
            )
            for index, loaded in enumerate(done):
                with self._changed:
                    if not loaded:
                        self.failed.append(index)
                    self._loaded = index + 1
                    self.seconds = time.perf_counter() - started
                    self._changed.notify_all()
        except BaseException as error:  # handed to the consumer, which is waiting on this thread
            with self._changed:
                self._error = error
                self._changed.notify_all()

    def _wait_for(self, count):
        with self._changed:
            self._changed.wait_for(lambda: self._loaded >= count or self._error is not None)
            if self._error is not None:
                raise self._error

    def batches(self, batch_size):
        """Consecutive slices of `array` of `batch_size` images, each yielded as soon as it is loaded."""
        for start in range(0, len(self), batch_size):
            stop = min(start + batch_size, len(self))
            self._wait_for(stop)
            yield self.array[start:stop]
'''

# ---- kaggle_src/extract_features.py ----
SOURCES['kaggle_src.extract_features'] = r'''
"""Stage 3: the 4096-d Xception + InceptionV3 features of each image and of its horizontal flip.

One Keras model does it all on the device: it takes a uint8 batch, casts and scales it to [-1, 1]
(both backbones' preprocessing), adds the flipped copy of the same batch, runs each backbone once
over both views and returns the concatenated pooled features as (batch, views, features). So each
image crosses to the GPU once, as uint8, and the data is passed over once — where the seed ran
`predict` four times over float32 host copies.

On the GPU the backbones compute in float16 (T4-class tensor cores) or bfloat16 (Ampere and newer)
while features come back as float32; with two or more GPUs (Kaggle's T4 x2) every batch is split
across them by a MirroredStrategy. Batches are fed from the background image loader through
tf.data, so decoding overlaps the GPU's work; the batch size is what fits a 16 GB T4 (or, on the CPU, a
few GB of RAM) for the backbones and size, and an out-of-memory error halves it instead of ending the
run. Every batch has that one size, the last padded, so that a split costs one trace (with XLA, one
compile) of the model: a new shape for the last batch cost 20 to 45 s more on a CPU.
"""
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from .backbones import BACKBONES
from .errors import InputError, progress

CPU_BATCH_SIZE = 64  # images per batch without a GPU at most
MAX_BATCH_SIZE = 256  # images per replica at most
REPLICA_ACTIVATION_BYTES = 4 * 2**30  # a batch's activations per GPU (a quarter of a T4's 16 GB) or in RAM, by our
# estimate: on the CPU, Xception alone at 576 px and 64 images a batch (21 GB estimated) was killed at 18 GB resident
IMAGENET_BGR_MEAN = [103.939, 116.779, 123.68]  # "caffe" preprocessing
IMAGENET_RGB_MEAN, IMAGENET_RGB_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # "torch" preprocessing
LIVE_OUTPUTS = 4  # layer outputs alive at once in inference: input, output, a residual branch, workspace


def build_backbone(name, image_size, weights_path=None):
    """Backbone `name` without its top, average-pooled; ImageNet weights from a local legacy .h5 file.

    `weights_path=None` gives random-init weights (dry runs). Never downloads anything. A file that will not
    load (truncated, the with-top variant, another backbone's) is an InputError naming it and Keras' reason.
    """
    backbone = BACKBONES[name]
    constructor = getattr(keras.applications, backbone.constructor)
    try:
        return constructor(
            include_top=False,
            weights=None if weights_path is None else str(weights_path),
            input_shape=(image_size, image_size, 3),
            pooling="avg",
        )
    except (OSError, ValueError) as error:
        if weights_path is None:
            raise
        said = " ".join(str(error).split())
        raise InputError(f"{weights_path}: not {backbone.constructor}'s no-top ImageNet weights "
                         f"({backbone.weights_file}); Keras said: {said}") from None


def compute_dtype(precision):
    """The dtype the backbones compute in: `precision`, or for "auto" the fastest that the first GPU supports."""
    if precision != "auto":
        return precision
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "float32"
    capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))
    return "bfloat16" if capability >= (8, 0) else "float16" if capability >= (7, 0) else "float32"


def gpu_names():
    """The names of the GPUs TensorFlow sees (e.g. "Tesla T4"), in its order; empty without one."""
    return [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
            for gpu in tf.config.list_physical_devices("GPU")]


def check_accelerator(config, kaggle):
    """Stop a Kaggle session that would extract real features without a GPU (its accelerator is off: hours on
    4 CPUs); elsewhere return whether such a run is about to extract on the CPU, which is worth a warning."""
    if config.dry_run or gpu_names():
        return False
    if kaggle:
        raise InputError("no GPU in this Kaggle session: turn the accelerator on (Settings > Accelerator > "
                         "GPU T4 x2) and run again; features extracted on its CPUs would take hours")
    return True


def estimate_seconds(extractor, n_images, batch=4):
    """Seconds the extractor would take over `n_images`, timed on one batch of `batch` blank images (after a
    first batch, which traces the model)."""
    size = extractor.input_shape[1]
    blank = np.zeros((batch, size, size, 3), np.uint8)
    extractor.predict_on_batch(blank)
    start = time.perf_counter()
    extractor.predict_on_batch(blank)
    return (time.perf_counter() - start) * n_images / batch


def describe_extractor(extractor):
    """What the extraction runs as: the backbones' compute dtype, replicas and XLA."""
    backbone = next(layer for layer in extractor.layers if isinstance(layer, keras.Model))
    return {"compute_dtype": backbone.compute_dtype, "replicas": extractor.distribute_strategy.num_replicas_in_sync,
            "xla": bool(extractor.jit_compile)}


def describe_runtime(extraction):
    """What the run ran on: the TensorFlow, Keras and numpy versions, the GPUs, and `extraction` (describe_extractor's
    account with the batch size per split; None where the features were read, not extracted)."""
    return {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__, "gpus": gpu_names(),
            "extraction": extraction}


def distribution_strategy(devices=None):
    """A MirroredStrategy over `devices` (default: every GPU) when there are two or more, else the default strategy."""
    devices = devices or [device.name for device in tf.config.list_logical_devices("GPU")]
    return tf.distribute.MirroredStrategy(devices) if len(devices) > 1 else tf.distribute.get_strategy()


def build_extractor(config, weights=None, devices=None):
    """One model: uint8 images (batch, size, size, 3) -> float32 features (batch, views, sum of widths).

    Backbones are built from `weights` ({name: .h5 path}; a missing name is random-init) in the
    configured precision, under the distribution strategy, with XLA as configured.
    """
    dtype = compute_dtype(config.precision)
    strategy = distribution_strategy(devices)
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32" if dtype == "float32" else f"mixed_{dtype}")
    try:
        with strategy.scope():
            backbones = {name: build_backbone(name, size, (weights or {}).get(name)) for name, size in config.input_sizes.items()}
            extractor = fuse_views(backbones, config.image_size, config.flips)
            extractor.compile(jit_compile={"auto": "auto", "on": True, "off": False}[config.xla])
    finally:
        keras.config.set_dtype_policy(previous_policy)
    sizes = ", ".join(f"{name} at {size}px" for name, size in config.input_sizes.items())
    print(f"extractor: {sizes} in {dtype} on "
          f"{strategy.num_replicas_in_sync} replica(s), XLA {'on' if extractor.jit_compile else 'off'}")
    return extractor


def fuse_views(backbones, image_size, flips=True):
    """The extractor model around already built `backbones` ({name: model}): on the device, each backbone
    gets the views resized to its own input size and scaled its own way; the features are concatenated."""
    images = keras.Input((image_size, image_size, 3), dtype="uint8", name="images")
    pixels = ops.cast(images, next(iter(backbones.values())).compute_dtype)
    views = [pixels, ops.flip(pixels, axis=2)] if flips else [pixels]
    stacked = ops.concatenate(views, axis=0)  # (views * batch, ...): one backbone call per batch
    features = []
    for name, backbone in backbones.items():
        size = backbone.input_shape[1]
        resized = stacked if size == image_size else ops.image.resize(stacked, (size, size), antialias=True)
        features.append(ops.cast(backbone(preprocess(resized, BACKBONES[name].preprocessing)), "float32"))
    per_view = ops.stack(ops.split(ops.concatenate(features, axis=-1), len(views), axis=0), axis=1)
    return keras.Model(images, per_view, name="extractor")


def preprocess(pixels, mode):
    """RGB pixels in [0, 255] scaled as keras.applications' preprocess_input does for `mode` (see backbones.py)."""
    if mode == "tf":
        return pixels / 127.5 - 1.0
    if mode == "caffe":
        return ops.flip(pixels, axis=-1) - ops.cast(IMAGENET_BGR_MEAN, pixels.dtype)
    if mode == "torch":
        return (pixels / 255.0 - ops.cast(IMAGENET_RGB_MEAN, pixels.dtype)) / ops.cast(IMAGENET_RGB_STD, pixels.dtype)
    return pixels


def activation_bytes(extractor):
    """Estimated device memory that inference over one image (all its views) keeps alive at once.

    The backbones run one after the other and free each layer's input after use, so the peak is a few
    layer outputs of the widest backbone: LIVE_OUTPUTS times its largest, in its compute dtype, per view.
    """
    views = extractor.output.shape[1]
    largest = max(
        int(np.prod(layer.output.shape[1:])) * np.dtype(layer.compute_dtype).itemsize
        for backbone in extractor.layers
        if isinstance(backbone, keras.Model)
        for layer in backbone.layers
    )
    return views * LIVE_OUTPUTS * largest


def choose_batch_size(extractor, on_gpu):
    """Images per batch: the largest power of two per replica whose activations fit in REPLICA_ACTIVATION_BYTES (at
    most MAX_BATCH_SIZE on a GPU, CPU_BATCH_SIZE without one), times the replicas; at least one.

    A fixed budget that fits a 16 GB T4, not a reading of free memory: TensorFlow holds GPU memory it has
    taken, so what nvidia-smi calls free depends on who ran first, not on what the batch needs.
    """
    per_replica = max(1, REPLICA_ACTIVATION_BYTES // activation_bytes(extractor))
    per_replica = min(MAX_BATCH_SIZE if on_gpu else CPU_BATCH_SIZE, 2 ** int(np.log2(per_replica)))
    return per_replica * extractor.distribute_strategy.num_replicas_in_sync


def available_memory():
    """Bytes of RAM that the system can still give (Linux's MemAvailable), or None where it does not say."""
    try:
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    found = [line.split()[1] for line in meminfo.splitlines() if line.startswith("MemAvailable:")]
    return int(found[0]) * 1024 if found else None


def check_memory(extractor, images, batch_size, on_gpu):
    """Stop, in one line, a split that cannot fit in RAM: its uint8 images, plus off the GPU a batch's activations,
    against what the system has available; a run killed for memory says nothing at all."""
    available = available_memory()
    images_bytes = images.array.nbytes
    batch_bytes = 0 if on_gpu else batch_size * activation_bytes(extractor)
    if available is not None and images_bytes + batch_bytes > available:
        raise InputError(
            f"config image_size={images.size}: the {len(images)} {images.desc} images need about "
            f"{(images_bytes + batch_bytes) / 2**30:.1f} GiB of RAM at this size ({images_bytes / 2**30:.1f} GiB of "
            f"uint8 images, {batch_bytes / 2**30:.1f} GiB for a batch of {batch_size}), and {available / 2**30:.1f} "
            f"GiB is available: lower --image-size or --extract-batch-size"
        )


def extract_features(extractor, images, batch_size=0):
    """Run the extractor over LoadedImages; returns (float32 (n_images, views, features), the batch size used).

    Batches stream in from the loader as they are decoded. `batch_size` 0 chooses it for the backbones and
    size (see choose_batch_size); never more than the split's images, so that a small split is not padded up to
    it. Out of memory, the batch is halved and the split started again.
    """
    on_gpu = bool(tf.config.list_physical_devices("GPU"))
    batch_size = min(batch_size or choose_batch_size(extractor, on_gpu), max(1, len(images)))
    check_memory(extractor, images, batch_size, on_gpu)
    while True:
        try:
            return _predict(extractor, images, batch_size), batch_size
        except tf.errors.ResourceExhaustedError:
            if batch_size <= 1:
                raise
            batch_size = max(1, batch_size // 2)
            print(f"out of GPU memory: extracting again with {batch_size} images per batch")


class ProgressCallback(keras.callbacks.Callback):
    """Moves a progress bar on by the images of each batch that `predict` finishes."""

    def __init__(self, bar, batch_size):
        super().__init__()
        self.bar, self.batch_size = bar, batch_size

    def on_predict_batch_end(self, batch, logs=None):
        self.bar.update(min(self.batch_size, self.bar.total - self.bar.n))


def padded(batches, batch_size):
    """`batches` with the last one padded with blank images up to `batch_size`: one shape, one trace."""
    for batch in batches:
        if len(batch) < batch_size:
            batch = np.concatenate([batch, np.zeros((batch_size - len(batch), *batch.shape[1:]), batch.dtype)])
        yield batch


def _predict(extractor, images, batch_size):
    """The extractor's features of `images`, fed through tf.data as they load.

    tf.data keeps the generator's function in a registry of its own for as long as the process lives, so the function
    reaches the images through `source`, emptied once the split is done: else every split's images (6.2 GB for the
    training set at 448 px) would stay in memory while the next split loads."""
    size, source = extractor.input_shape[1], [images]
    dataset = tf.data.Dataset.from_generator(
        lambda: padded(source[0].batches(batch_size), batch_size),
        output_signature=tf.TensorSpec((batch_size, size, size, 3), tf.uint8),
    ).apply(tf.data.experimental.assert_cardinality(-(-len(images) // batch_size))).prefetch(2)
    try:
        with progress(len(images), f"extract {images.desc} ({batch_size} a batch)", "img") as bar:
            features = extractor.predict(dataset, verbose=0, callbacks=[ProgressCallback(bar, batch_size)])
    finally:
        source.clear()
    return np.asarray(features[:len(images)], np.float32)
'''

# ---- kaggle_src/feature_cache.py ----
SOURCES['kaggle_src.feature_cache'] = r'''
"""Features as a reusable output: saved beside the submission, so that every later idea about the heads
runs on CPU in minutes instead of repeating the GPU extraction.

features.npz holds each split's features as float16 after a per-column affine code (each column of
each view minus its training mean, over its training standard deviation), which keeps float16's
precision for the variation the heads learn from, even for the tiny-scale features of random-init
backbones; features_manifest.json says what they are. A run that extracts also trains on the decoded
features, so a heads-only run on the cache gives the same submission as the run that made it.
"""
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .errors import InputError

FEATURES_FILE = "features.npz"
MANIFEST_FILE = "features_manifest.json"


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_features(directory, features, competition, config, weights, failed, commit):
    """Write features.npz and features_manifest.json to `directory`; return the decoded features, as a
    heads-only run will read them."""
    train = features["train"]
    mean = train.mean(axis=0)
    std = np.where(train.std(axis=0) > 0, train.std(axis=0), 1).astype(np.float32)
    coded = {split: ((values - mean) / std).astype(np.float16) for split, values in features.items()}
    np.savez(Path(directory) / FEATURES_FILE, mean=mean, std=std, **coded)
    manifest = {
        "backbones": list(config.backbones),
        "input_sizes": config.input_sizes,
        "image_size": config.image_size,
        "precision": config.precision,
        "views": list(config.views),
        "features": int(train.shape[-1]),
        "train_ids": competition.train_ids,
        "test_ids": competition.test_ids,
        "unreadable": {split: [competition.ids(split)[index] for index in indices] for split, indices in failed.items()},
        "weights_sha256": {name: file_sha256(path) for name, path in sorted(weights.items())} or "random-init (dry run)",
        "seed": config.seed,
        "package_commit": commit,
    }
    (Path(directory) / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
    return {split: decode(values, mean, std) for split, values in coded.items()}


def decode(coded, mean, std):
    return coded.astype(np.float32) * std + mean


def find_saved_features(competition, config):
    """For a heads-only run (config.features): the folder under config.features that holds the saved features,
    and their manifest, checked against `competition` and the configured views. None for a run that extracts."""
    if not config.features:
        return None
    folder = find_features(config.features)
    return folder, read_manifest(folder, competition, config)


def find_features(root):
    """The folder under `root` that holds features_manifest.json (a kernel's attached output, at any depth)."""
    for folder, subfolders, files in os.walk(root, followlinks=True):
        subfolders.sort()
        if MANIFEST_FILE in files and FEATURES_FILE in files:
            return Path(folder)
    raise InputError(f"features {root}: no folder holds {MANIFEST_FILE} and {FEATURES_FILE}; "
                     "attach the output of a kernel that extracted them")


def read_manifest(directory, competition, config):
    """The manifest in `directory`, checked against the competition's ids and the configured views."""
    path = Path(directory) / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: not a readable manifest ({error})") from None
    for split in ("train", "test"):
        if manifest.get(f"{split}_ids") != competition.ids(split):
            raise InputError(f"{path}: its {split} ids differ from the competition's (another dataset or order)")
    if manifest.get("views") != list(config.views):
        raise InputError(f"{path}: views {manifest.get('views')}: expected {list(config.views)} (the flips setting)")
    return manifest


def load_features(directory, manifest):
    """The decoded float32 features {"train", "test"} (n, views, features) and the unreadable indices per split."""
    with np.load(Path(directory) / FEATURES_FILE) as stored:
        features = {split: decode(stored[split], stored["mean"], stored["std"]) for split in ("train", "test")}
    failed = {
        split: sorted(manifest[f"{split}_ids"].index(image_id) for image_id in manifest["unreadable"][split])
        for split in ("train", "test")
    }
    return features, failed
'''

# ---- kaggle_src/train_heads.py ----
SOURCES['kaggle_src.train_heads'] = r'''
"""Stage 4: stratified K-fold CV of dropout + softmax heads, one per fold and view, with out-of-fold scores.

All heads train together, as in the seed's ten sequential fits but in one loop: each step draws every
head's next batch of its own shuffled training rows, applies each head to its own view with one
batched matmul, and updates all heads with one Adam step, whose updates are per weight, so the heads
stay independent. Each head stops early on its own validation loss, keeps its best epoch's weights,
and leaves the loop: no wasted rows, no wasted epochs. Each fold and view's head is the average of a few
such members (`members_per_head`): the geometric mean of their predictions, at one head's cost to apply.

With `standardise` (the default; the seed's heads had none) each head centres and scales its inputs by its
training fold's mean and standard deviation: on real ImageNet features it lowered the held-out log loss of
the seed's heads (benchmarks/README.md gives the measurement), and random-init features (dry runs), nearly constant per
column, teach a head nothing without it.

The logistic regressions (train_logistic) become TrainedHeads too, so everything downstream treats both kinds
alike.
"""
import warnings
from dataclasses import dataclass, replace

import numpy as np
import tensorflow as tf
from keras import ops
from sklearn.model_selection import StratifiedKFold

from .ensembles import score_predictions
from .errors import progress, warn


STD_FLOOR = 0.01  # standardisation: no feature's deviation counts as less than this times the median feature's. On a
# 10-breed stub at 75 px, real Xception weights, the logistic regressions scored 4.15 out of fold without it (chance:
# 2.30; features 20,000 deviations out), 0.035 with it. On the real photos at 299 and 448 px every feature's deviation
# is above 0.1 times the median's, so the floor changes nothing there


@dataclass
class TrainedHead:
    """One trained head: softmax(((x - mean) * scale) @ kernel + bias) on its view's features."""

    fold: int
    view: int  # index into the features' view axis
    mean: np.ndarray  # (features,)
    scale: np.ndarray  # (features,) 1 / standard deviation
    kernel: np.ndarray  # (features, classes)
    bias: np.ndarray  # (classes,)
    epochs: int = 0  # epochs run before it stopped early (for a logistic regression: L-BFGS iterations)
    val_log_loss: float = float("nan")
    val_accuracy: float = float("nan")

    def predict(self, features):
        """Class probabilities (n, classes) for features (n, d) of this head's view."""
        # Scaling the kernel's rows, not the features' columns: the same product, one pass over the features fewer.
        logits = (features - self.mean) @ (self.scale[:, None] * self.kernel) + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        return probabilities / probabilities.sum(axis=1, keepdims=True)


def make_folds(labels, config):
    """config.n_folds stratified (train_index, validation_index) pairs, shuffled by config.seed: reproducible.

    A breed with fewer images than folds is missing from some folds' validation rows: one warning line of the
    run's own says so, in place of scikit-learn's (which names its own source line).
    """
    counts = np.bincount(labels)
    short = counts[(counts > 0) & (counts < config.n_folds)]
    if len(short):
        warn(f"training labels: {len(short)} breed(s) with fewer images than the {config.n_folds} folds (the fewest "
             f"has {short.min()}); each is validated in as many folds as it has images")
    splitter = StratifiedKFold(n_splits=config.n_folds, shuffle=True, random_state=config.seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        return list(splitter.split(np.zeros((len(labels), 1)), labels))


class HeadsTrainer:
    """The weights of every head, (heads, features, classes) and (heads, classes), and one compiled Adam step
    that trains the heads still active on a batch of their own rows.

    The step is Keras' Dense + Dropout + Adam written out for many heads at once, cheaper than Keras' on a CPU,
    where the heads train when there is no GPU: the gradient is written out rather than taped, the dropout mask
    comes from one random byte per feature (so the rate is rounded to 1/256) rather than one random float, and
    Adam's update is TensorFlow's fused kernel, one pass over every head's weights rather than several.
    """

    def __init__(self, heads, features, targets, config):
        n_samples, n_views, n_features = features.shape
        n_classes = targets.shape[1]
        self.features = on_device(features.reshape(n_samples * n_views, n_features))  # row r, view v: r * n_views + v
        self.targets = on_device(targets)  # (target rows, classes): one-hot labels, then any pseudo-labels
        self.n_views = n_views
        self.views = tf.constant([head.view for head in heads], tf.int32)
        self.standardise = config.standardise
        self.mean = on_device(np.stack([head.mean for head in heads]))
        self.scale = on_device(np.stack([head.scale for head in heads]))
        limit = np.sqrt(6.0 / (n_features + n_classes))  # Glorot-uniform, as each head's own Dense layer would have
        initial = np.random.default_rng(config.seed).uniform(-limit, limit, (len(heads), n_features, n_classes))
        self.kernel = tf.Variable(initial.astype(np.float32), name="kernel")
        self.bias = tf.Variable(np.zeros((len(heads), n_classes), np.float32), name="bias")
        self.moments = [(tf.Variable(tf.zeros_like(weights)), tf.Variable(tf.zeros_like(weights)))
                        for weights in (self.kernel, self.bias)]
        self.iterations = tf.Variable(0.0)
        self.learning_rate = config.learning_rate
        self.dropped_bytes = round(config.dropout * 256)  # a feature is dropped when its random byte is below this
        self.random = tf.random.Generator.from_seed(config.seed)
        self.step = tf.function(self._step, reduce_retracing=True)

    def _step(self, active, rows, target_rows, weights):
        """One Adam step for heads `active` (a,) on their feature rows (a, batch), whose targets are `target_rows`
        of the targets; weight 0 marks padding.

        The gradient is written out rather than taped: each head's loss is the weighted mean cross-entropy of its
        batch, so d loss / d logits = (softmax - target) * weight / total weight, and the kernel's gradient is the
        inputs' transpose times that. On a CPU the tape's gradients of the gathers took a third of the step.
        """
        x = tf.gather(self.features, rows * self.n_views + tf.gather(self.views, active)[:, None])
        if self.standardise:
            x = (x - tf.gather(self.mean, active)[:, None]) * tf.gather(self.scale, active)[:, None]
        kept_scale = 1.0
        if self.dropped_bytes:
            words = self.random.uniform_full_int(tf.concat([tf.shape(x)[:-1], [-(-x.shape[-1] // 4)]], 0), tf.uint32)
            random_bytes = tf.reshape(tf.bitcast(words, tf.uint8), tf.concat([tf.shape(x)[:-1], [-1]], 0))
            x = tf.where(random_bytes[..., :x.shape[-1]] >= self.dropped_bytes, x, 0.0)
            kept_scale = 256 / (256 - self.dropped_bytes)  # inverted dropout's scaling, moved past the linear matmul
        every_head = tf.equal(tf.size(active), self.kernel.shape[0])
        kernel = tf.cond(every_head, lambda: tf.identity(self.kernel), lambda: tf.gather(self.kernel, active))
        logits = kept_scale * tf.einsum("abd,adc->abc", x, kernel) + tf.gather(self.bias, active)[:, None]
        share = weights / tf.reduce_sum(weights, axis=1, keepdims=True)
        d_logits = (tf.nn.softmax(logits) - tf.gather(self.targets, target_rows)) * share[..., None]
        gradients = tf.einsum("abd,abc->adc", x, kept_scale * d_logits), tf.reduce_sum(d_logits, axis=1)
        step = self.iterations.assign_add(1.0)
        for variable, (first, second), gradient in zip((self.kernel, self.bias), self.moments, gradients):
            # Once a head has stopped, its rows of the gradient are zero (its best weights are already kept).
            gradient = tf.cond(every_head, lambda gradient=gradient: gradient,
                               lambda gradient=gradient, variable=variable: tf.scatter_nd(
                                   active[:, None], gradient, tf.shape(variable, out_type=tf.int32)))
            tf.raw_ops.ResourceApplyAdam(  # Keras' Adam defaults: beta_1 0.9, beta_2 0.999, epsilon 1e-7
                var=variable.handle, m=first.handle, v=second.handle, beta1_power=0.9 ** step,
                beta2_power=0.999 ** step, lr=self.learning_rate, beta1=0.9, beta2=0.999, epsilon=1e-7,
                grad=gradient,
            )


def train_heads(features, labels, folds, n_classes, config, pseudo=None):
    """Train one head per fold and view on `features` (n, views, d); return (heads, out-of-fold predictions).

    Each head is config.members_per_head members trained apart (their own initialisation, dropout masks and
    batch order; each stopped early on its own), with their kernels and biases averaged: softmax of the mean
    logits, which is the members' geometric mean, renormalised, as they share the fold's standardisation. So the
    ensemble costs one head's prediction, and every option downstream sees one head per fold and view.

    With `pseudo` (PseudoLabels) each fold's heads also train on its test rows, towards its targets; they are
    validated, and stopped early, on the fold's validation rows alone.
    """
    features = np.asarray(features, np.float32)
    n_views = features.shape[1]
    identity = np.zeros(features.shape[-1], np.float32), np.ones(features.shape[-1], np.float32)
    heads = [
        TrainedHead(fold, view, *(standardisation(features[train_index, view]) if config.standardise else identity),
                    kernel=None, bias=None)
        for fold, (train_index, _) in enumerate(folds)
        for view in range(n_views)
    ]
    members = [replace(head) for head in heads for _ in range(config.members_per_head)]
    training, targets, every_feature = training_rows(features, labels, folds, n_classes, pseudo)

    trainer = HeadsTrainer(members, every_feature, targets, config)
    shuffle = np.random.default_rng(config.seed)
    best_loss, best_epoch = np.full(len(members), np.inf), np.zeros(len(members), int)
    active = list(range(len(members)))
    bar = progress(config.max_epochs, f"train {len(heads)} heads, {config.members_per_head} members each", "epoch")
    for epoch in range(config.max_epochs):
        orders = [shuffle.permutation(len(training[members[index].fold][0])) for index in active]
        for start in range(0, max(map(len, orders)), config.head_batch_size):
            batches = [order[start:start + config.head_batch_size] for order in orders]
            rows = np.zeros((len(active), max(map(len, batches))), np.int32)
            target_rows, weights = np.zeros_like(rows), np.zeros(rows.shape, np.float32)
            for position, (index, batch) in enumerate(zip(active, batches)):
                feature_rows, its_targets = training[members[index].fold]
                rows[position, :len(batch)], target_rows[position, :len(batch)] = feature_rows[batch], its_targets[batch]
                weights[position, :len(batch)] = 1
            trainer.step(tf.constant(active, tf.int32), tf.constant(rows), tf.constant(target_rows),
                         tf.constant(weights))
        kernel, bias = ops.convert_to_numpy(trainer.kernel), ops.convert_to_numpy(trainer.bias)
        for index in list(active):
            member, rows = members[index], folds[members[index].fold][1]
            candidate = TrainedHead(member.fold, member.view, member.mean, member.scale, kernel[index], bias[index])
            probabilities = candidate.predict(features[rows, member.view])
            loss = -np.mean(np.log(np.maximum(probabilities[np.arange(len(rows)), labels[rows]], 1e-15)))
            if loss < best_loss[index]:
                best_loss[index], best_epoch[index] = loss, epoch
                member.kernel, member.bias = kernel[index].copy(), bias[index].copy()
            if epoch - best_epoch[index] >= config.patience or epoch + 1 == config.max_epochs:
                member.epochs = epoch + 1
                active.remove(index)
        bar.set_postfix_str(f"{len(active)} training, best val log loss {best_loss.min():.4f}", refresh=False)
        bar.update()
        if not active:
            break
    bar.close()
    k = config.members_per_head
    heads = [mean_head(members[index * k:(index + 1) * k]) for index in range(len(heads))]
    oof = out_of_fold(heads, features, labels, folds, n_classes)
    print_validation(heads, config.views, "epochs (its longest member's)")
    return heads, oof


def training_rows(features, labels, folds, n_classes, pseudo):
    """What each fold's heads train on: per fold (feature rows, target rows), the targets (one-hot labels, then each
    fold's pseudo-labels) and the features they index (the training rows, then the test rows of `pseudo`)."""
    targets = [np.eye(n_classes, dtype=np.float32)[labels]]
    training = [(train_index, train_index) for train_index, _ in folds]
    if pseudo is None:
        return training, targets[0], features
    offset = len(labels)
    for fold, (train_index, _) in enumerate(folds):
        rows = pseudo.rows[fold]
        training[fold] = (np.concatenate([train_index, len(labels) + rows]),
                          np.concatenate([train_index, offset + np.arange(len(rows))]))
        targets.append(pseudo.targets[fold].astype(np.float32))
        offset += len(rows)
    return training, np.concatenate(targets), np.concatenate([features, np.asarray(pseudo.features, np.float32)])


def mean_head(members):
    """One head from `members` of a fold and view (one standardisation): their mean kernel and bias, so that its
    softmax is their predictions' geometric mean, renormalised; its epochs are its longest member's."""
    return TrainedHead(members[0].fold, members[0].view, members[0].mean, members[0].scale,
                       np.mean([member.kernel for member in members], axis=0),
                       np.mean([member.bias for member in members], axis=0),
                       epochs=max(member.epochs for member in members))


def on_device(array):
    """`array` as a tensor made by an op on the first GPU when there is one (else the CPU), once: a tf.constant
    made from numpy may stay in host memory and be copied to the GPU at every step that reads it."""
    with tf.device("/GPU:0" if tf.config.list_logical_devices("GPU") else "/CPU:0"):
        return tf.identity(array)


def standardisation(train):
    """(mean, 1 / standard deviation) of the training rows `train` (n, d); a constant feature stays 0.

    A feature's deviation counts as at least STD_FLOOR times the median feature's: one that barely varies over a
    fold's rows (a rare activation) would otherwise scale an image where it does fire to thousands of deviations,
    and its logits with it."""
    std = train.std(axis=0)
    floor = STD_FLOOR * np.median(std[std > 0]) if (std > 0).any() else 0.0
    return train.mean(axis=0), (1 / np.where(std > 0, np.maximum(std, floor), 1)).astype(np.float32)


def out_of_fold(heads, features, labels, folds, n_classes):
    """Each head's predictions on its fold's validation rows, on every view: (head views, views, n, classes).

    Also scores each head on its own view's validation rows: its val_log_loss and val_accuracy.
    """
    n_samples, n_views = features.shape[:2]
    oof = np.zeros((max(head.view for head in heads) + 1, n_views, n_samples, n_classes), np.float32)
    for head in heads:
        rows = folds[head.fold][1]
        for view in range(n_views):
            oof[head.view, view, rows] = head.predict(features[rows, view])
        score = score_predictions(oof[head.view, head.view, rows], labels[rows], n_classes)
        head.val_log_loss, head.val_accuracy = score["log_loss"], score["accuracy"]
    return oof


def print_validation(heads, views, counted):
    """One line per head: its fold, its view (named by `views`), what it ran (its epochs, as `counted` calls
    them) and its validation scores."""
    for head in heads:
        print(f"fold {head.fold} {views[head.view]}: {head.epochs} {counted}, "
              f"val log loss {head.val_log_loss:.4f}, accuracy {head.val_accuracy:.4f}")
'''

# ---- kaggle_src/pseudo_labels.py ----
SOURCES['kaggle_src.pseudo_labels'] = r'''
"""Stage 4c: pseudo-labelling, the test set put to work. A second round of heads trains on the training rows plus
test rows, the test rows' targets being the first round's predictions of them.

The test rows are split into as many parts as there are folds. Fold k's second-round heads train on the test rows
of every part but part k, and part k's rows are predicted by fold k's heads alone: no test row is predicted by a head
that trained towards a prediction of it. (A linear head on thousands of features can fit its training rows' targets
nearly exactly; trained on every test row, it hands the first round's guesses back, mistakes included: on Stanford
Dogs photos that raised the held-out log loss by 7%.) Fold k's targets come from fold k's first-round heads, which
never saw the fold's validation rows, so the second round's out-of-fold scores stay honest, and they score the same
kind of head that predicts the test. Test rows never enter a validation fold. Off by default: on the Stanford Dogs
photos that defaults are chosen on, this too raised the held-out log loss, by 6% (one fold's heads predict each test
row, not five folds' averaged), though it lowered the out-of-fold one by 9% (benchmarks/README.md).

- `soft`: the targets are the fold's first-round heads' geometric mean over every view.
- `hard`: only the test rows that prediction gives a breed with at least HARD_CONFIDENCE, as that breed (one-hot).
"""
from dataclasses import dataclass

import numpy as np

from .ensembles import combine

PSEUDO_LABELS = ("off", "soft", "hard")
HARD_CONFIDENCE = 0.9  # hard pseudo-labels: the least first-round probability of its breed a test row needs


@dataclass
class PseudoLabels:
    """Each fold's test rows to train on, their targets, and the part of the test set the fold predicts."""

    features: np.ndarray  # (n_test, views, d): the test features the rows index
    rows: list  # per fold: indices into `features`
    targets: list  # per fold: (len(rows), classes)
    parts: list  # per fold: the test rows (indices into `features`) that its heads alone predict

    def own_fold(self, test_predictions):
        """`test_predictions` (folds, head views, views, n_test, classes) with each part's rows taken from its own
        fold's heads in every fold's place, so that any mean over the folds is that fold's prediction."""
        predictions = test_predictions.copy()
        for fold, part in enumerate(self.parts):
            predictions[:, :, :, part] = test_predictions[fold][:, :, part]
        return predictions


def pseudo_labels(heads, test_features, readable, mode, seed):
    """The PseudoLabels of `mode` (soft or hard) for the `readable` test rows of `test_features` (n_test, views, d),
    from the first round's `heads` (one per fold and view); the test rows split into parts at random by `seed`."""
    folds = sorted({head.fold for head in heads})
    shuffled = np.random.default_rng(seed).permutation(len(test_features))
    parts = [np.sort(part) for part in np.array_split(shuffled, len(folds))]
    rows, targets = [], []
    for fold in folds:
        others = np.setdiff1d(readable, parts[fold])
        fold_heads = [head for head in heads if head.fold == fold]
        predictions = combine(np.stack([head.predict(test_features[others, view]) for head in fold_heads
                                        for view in range(test_features.shape[1])]), geometric=True)
        keep = predictions.max(axis=1) >= HARD_CONFIDENCE if mode == "hard" else np.ones(len(others), bool)
        rows.append(others[keep])
        targets.append(np.eye(predictions.shape[1])[predictions[keep].argmax(axis=1)] if mode == "hard"
                       else predictions)
    return PseudoLabels(test_features, rows, targets, parts)
'''

# ---- kaggle_src/train_logistic.py ----
SOURCES['kaggle_src.train_logistic'] = r'''
"""Stage 4b: multinomial logistic regressions, one per fold, as the common public kernel has, but on both views
and with C chosen by cross-fitting.

Each regression is fitted on the standardised rows of every view (a flipped dog is as much a dog) and applied to
each view (its TTA). It minimises scikit-learn's objective for LogisticRegression (mean log loss plus
||kernel||^2 / (2 C n), the bias unpenalised) by L-BFGS, stopped as scikit-learn's lbfgs stops, but written in
TensorFlow, so that the whole fit runs where the heads train: on the GPU when there is one. scikit-learn's CPU
fits took minutes at full size (benchmarks/README.md, row 3b), and scipy's L-BFGS-B, with TensorFlow's loss, still
spent more time on its own bookkeeping over the 4097 x 120 parameters than on the loss.
The fits run to a tight tolerance: stopped at scikit-learn's default one, a fit lands wherever its start and
path left it, and on real features that cost more than the choice of C.
"""
import collections

import numpy as np
import tensorflow as tf

from .ensembles import score_predictions
from .errors import progress
from .train_heads import TrainedHead, on_device, out_of_fold, print_validation, standardisation

C_LADDER = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)  # the logistic regressions' inverse L2
# strengths that search_c may try (scikit-learn's C; its default 1)
C_START = 10.0  # where search_c starts: near the best C on real ImageNet features (benchmarks/README.md)
LOGISTIC_TOLERANCE = 1e-6  # a fit stops when no gradient entry is larger (scikit-learn's default: 1e-4)
LOGISTIC_MAX_ITERATIONS = 300  # L-BFGS iterations per fit at most (scikit-learn's default: 100)
LBFGS_MEMORY = 10  # the steps L-BFGS remembers (scikit-learn's lbfgs: 10)
# The traced functions below take any shape from their first call (input_signature), so that one trace serves every
# fold and a fit's arithmetic never depends on what ran before in the process: with reduce_retracing, a process that
# had fitted other shapes ran a generalised trace whose rounding moved where L-BFGS stopped, and a test run's
# submission differed in the 3rd digit from the same run in a fresh process.
MATRIX = tf.TensorSpec([None, None], tf.float32)
SCALAR = tf.TensorSpec([], tf.float32)


class SoftmaxRegression:
    """One fold's L2-regularised softmax regression: its standardised training rows of every view, held as a
    tensor where TensorFlow computes (the GPU when there is one), and its parameters along the path of Cs.

    The parameters are one (features + 1, classes present) float64 tensor, the kernel above the bias; the rows
    stay float32, and the logits are float64 from the matrix product on. With two classes this is the
    multinomial model, which is scikit-learn's binary one at 2C.
    """

    def __init__(self, features, labels):
        n_views, n_features = features.shape[1:]
        rows = features.reshape(-1, n_features)  # row r, view v: r * n_views + v
        self.mean, self.scale = standardisation(rows)
        self.classes = np.unique(labels)  # a class absent from the fold is never predicted
        self.n_views = n_views
        self.rows = on_device((rows - self.mean) * self.scale)
        self.targets = tf.constant(np.repeat(np.searchsorted(self.classes, labels), n_views), tf.int32)
        self.parameters = None  # (features + 1, classes present), once fitted
        self.iterations = 0  # L-BFGS iterations along the path so far

    def fit(self, c):
        """Fit at inverse L2 strength `c` from where the last fit ended (zero at first, unless start_from said
        otherwise); return the L-BFGS iterations it took."""
        start = tf.zeros((self.rows.shape[1] + 1, len(self.classes)), tf.float64) if self.parameters is None \
            else self.parameters
        l2_strength = tf.constant(1 / (c * self.rows.shape[0]), tf.float64)
        self.parameters, iterations = minimise(
            lambda parameters: loss_and_gradient_at(parameters, self.rows, self.targets, l2_strength), start)
        self.iterations += iterations
        return iterations

    def start_from(self, heads):
        """Start the next fit from the mean of other regressions' `heads` (TrainedHeads over every class, one per
        regression; a class absent from one is left out of its mean): near this fit's optimum when those were
        fitted on most of these rows, standardised nearly alike."""
        kernels = np.stack([head.kernel[:, self.classes] for head in heads])
        biases = np.stack([head.bias[self.classes] for head in heads])
        present = np.isfinite(biases)
        mean = np.vstack([np.where(present[:, None], kernels, 0).sum(axis=0),
                          np.where(present, biases, 0).sum(axis=0)]) / present.sum(axis=0)
        self.parameters = tf.constant(mean, tf.float64)

    def heads(self, fold, n_classes):
        """The fitted regression as one TrainedHead per view, over all `n_classes` (an absent class: bias -inf);
        each head's epochs are the L-BFGS iterations of the path to here."""
        kernel, bias = np.zeros((len(self.mean), n_classes), np.float32), np.full(n_classes, -np.inf, np.float32)
        parameters = self.parameters.numpy()
        kernel[:, self.classes], bias[self.classes] = parameters[:-1], parameters[-1]
        return [TrainedHead(fold, view, self.mean, self.scale, kernel, bias, epochs=self.iterations)
                for view in range(self.n_views)]


def minimise(loss_and_gradient, start):
    """Minimise a smooth convex loss from `start` by L-BFGS (Nocedal and Wright's algorithms 7.4 and 7.5) with a
    backtracking line search (sufficient decrease, halving the step). It stops as scikit-learn's lbfgs does: no
    gradient entry above LOGISTIC_TOLERANCE, a relative decrease of the loss under 64 float64 epsilons, or
    LOGISTIC_MAX_ITERATIONS. Return (parameters, iterations).

    The steps and gradient changes of the history are kept in float32: the direction needs no more, and the
    two-loop recursion, a pass over the history per term, took as long as the loss on a small fold in float64.
    """
    x = start
    loss, gradient = loss_and_gradient(x)
    loss = float(loss)
    no_step = (tf.zeros_like(start, tf.float32),) * 2 + (tf.constant(0.0),)  # changes no direction
    history = collections.deque([no_step] * LBFGS_MEMORY, maxlen=LBFGS_MEMORY)  # (s, y, 1 / s.y) of the last steps
    scale = None  # s.y / y.y of the last step: the initial inverse Hessian's scale
    for iteration in range(LOGISTIC_MAX_ITERATIONS):
        if float(tf.reduce_max(tf.abs(gradient))) <= LOGISTIC_TOLERANCE:
            return x, iteration
        direction = tf.cast(search_direction(tf.cast(gradient, tf.float32), tuple(history), tf.constant(scale or 1.0)),
                            tf.float64)
        slope = float(tf.reduce_sum(gradient * direction))
        step = 1.0 if scale else min(1.0, 1 / float(tf.norm(gradient)))
        for _ in range(50):
            x_new = x + step * direction
            loss_new, gradient_new = loss_and_gradient(x_new)
            if float(loss_new) <= loss + 1e-4 * step * slope:
                break
            step /= 2
        else:  # no step along the direction lowers the loss: as far as float64 goes
            return x, iteration
        s, y = x_new - x, gradient_new - gradient
        sy = float(tf.reduce_sum(s * y))
        if sy > 0:  # always, on a strictly convex loss, but for rounding
            history.append((tf.cast(s, tf.float32), tf.cast(y, tf.float32), tf.constant(1 / sy, tf.float32)))
            scale = sy / float(tf.reduce_sum(y * y))
        previous, loss = loss, float(loss_new)
        x, gradient = x_new, gradient_new
        if previous - loss <= 64 * np.finfo(float).eps * max(abs(previous), abs(loss), 1):
            return x, iteration + 1
    return x, LOGISTIC_MAX_ITERATIONS


@tf.function(input_signature=[MATRIX, ((MATRIX, MATRIX, SCALAR),) * LBFGS_MEMORY, SCALAR])
def search_direction(gradient, history, scale):
    """-H gradient by the two-loop recursion: H is L-BFGS' inverse Hessian estimate from `history`, (s, y, 1 / s.y)
    oldest first, starting from `scale` times the identity."""
    direction, alphas = gradient, []
    for s, y, rho in reversed(history):
        alphas.append(rho * tf.reduce_sum(s * direction))
        direction = direction - alphas[-1] * y
    direction = direction * scale
    for (s, y, rho), alpha in zip(history, reversed(alphas)):
        direction = direction + (alpha - rho * tf.reduce_sum(y * direction)) * s
    return -direction


@tf.function(input_signature=[tf.TensorSpec([None, None], tf.float64), MATRIX, tf.TensorSpec([None], tf.int32),
                              tf.TensorSpec([], tf.float64)])
def loss_and_gradient_at(parameters, rows, targets, l2_strength):
    """The objective (mean log loss + l2_strength / 2 * ||kernel||^2) and its gradient at `parameters`.

    The gradient is written out: d loss / d logits = (softmax - one-hot) / rows, and the kernel's gradient is its
    product with the rows, taken as (d_logits^T rows)^T, which a CPU computed in 60% of the time of rows^T d_logits.
    """
    kernel, bias = parameters[:-1], parameters[-1]
    logits = tf.cast(rows @ tf.cast(kernel, tf.float32), tf.float64) + bias
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits))
    d_logits = (tf.nn.softmax(logits) - tf.one_hot(targets, tf.shape(logits)[-1], dtype=tf.float64)) \
        / tf.cast(tf.shape(rows)[0], tf.float64)
    kernel_gradient = tf.transpose(tf.matmul(tf.cast(d_logits, tf.float32), rows, transpose_a=True))
    return loss + l2_strength / 2 * tf.reduce_sum(kernel ** 2), tf.concat(
        [tf.cast(kernel_gradient, tf.float64) + l2_strength * kernel, tf.reduce_sum(d_logits, axis=0)[None]], 0)


def train_logistic(features, labels, folds, n_classes, config):
    """Logistic regressions on `features` (n, views, d), one per fold (SoftmaxRegression). Return (heads, out-of-fold
    predictions).

    C (the inverse L2 strength) is searched along C_LADDER (search_c), every fold fitted at each C tried, each
    fold's regression warm-started from its own fit at the C before. Never from another fold's: that one has seen
    this fold's validation rows, and where the loss is flat a fit stops at the tolerance still near its start (on
    the benchmark's synthetic features, folds started so took no iteration and scored 0.0000 out of fold). A fold's out-of-fold
    rows come from its regression at the C with the lowest validation log loss summed over the other folds, so
    the choice never sees the rows it is scored on. The test gets one regression fitted on every training row at
    the C that is best over all folds, started from the mean of the folds' fits at that C: a fifth more rows than
    each fold's (on the real 6-per-breed features, held out: 0.134 against 0.144 for the folds' mean), so that its
    out-of-fold score, from the folds' regressions, errs on the side of caution. Its heads are those of fold 0.
    """
    features = np.asarray(features, np.float32)
    regressions = [SoftmaxRegression(features[train_index], labels[train_index]) for train_index, _ in folds]
    fitted, losses = {}, {}  # C: per fold, its regression as heads, and their validation log loss over every view

    def validation_loss(c):
        fitted[c], losses[c] = [], []
        bar.total = max(bar.total, len(fitted) * len(folds))  # the search went on to another C: its fits too
        bar.refresh()
        for fold, (regression, (_, validation_index)) in enumerate(zip(regressions, folds)):
            regression.fit(c)
            fitted[c].append(regression.heads(fold, n_classes))
            losses[c].append(np.mean([
                score_predictions(head.predict(features[validation_index, head.view]), labels[validation_index],
                                  n_classes)["log_loss"]
                for head in fitted[c][fold]
            ]))
            bar.update()
        return sum(losses[c])

    with progress(2 * len(folds), "fit logistic regressions, every fold at each C tried", "fit") as bar:
        tried = search_c(validation_loss)
    cross_fitted, best = choose_by_cross_fitting(np.array([losses[c] for c in tried]).T)
    print("logistic regressions, validation log loss by C: "
          + ", ".join(f"C={c:g} {np.mean(losses[c]):.4f}" for c in tried)
          + f"; out of fold, each fold at the best C on the others ({', '.join(f'{tried[i]:g}' for i in cross_fitted)})")
    oof_heads = [head for fold, choice in enumerate(cross_fitted) for head in fitted[tried[choice]][fold]]
    oof = out_of_fold(oof_heads, features, labels, folds, n_classes)
    print_validation(oof_heads, config.views, "L-BFGS iterations")
    every_row = SoftmaxRegression(features, labels)
    every_row.start_from([fold_heads[0] for fold_heads in fitted[tried[best]]])
    print(f"logistic regression for the test: every training row at C={tried[best]:g}, "
          f"{every_row.fit(tried[best])} L-BFGS iterations from the folds' mean")
    return every_row.heads(0, n_classes), oof


def search_c(validation_loss):
    """The Cs tried, ascending: C_START and the next C up C_LADDER, then on along the ladder the way that lowered
    `validation_loss(C)` (which fits at C; called once per C) while it keeps falling: one C past the lowest."""
    start = C_LADDER.index(C_START)
    losses = {index: validation_loss(C_LADDER[index]) for index in (start, start + 1)}
    step = 1 if losses[start + 1] < losses[start] else -1
    index = start + 1 if step == 1 else start
    while 0 <= index + step < len(C_LADDER) and losses[index] == min(losses.values()):
        index += step
        losses[index] = validation_loss(C_LADDER[index])
    return [C_LADDER[index] for index in sorted(losses)]


def choose_by_cross_fitting(losses):
    """From validation `losses` (folds, candidates): per fold, the candidate with the lowest loss summed over the
    other folds (never its own); and the candidate with the lowest loss over all folds."""
    total = losses.sum(axis=0)
    return [int((total - own).argmin()) for own in losses], int(total.argmin())
'''

# ---- kaggle_src/predict.py ----
SOURCES['kaggle_src.predict'] = r'''
"""Stage 5: the test predictions of every head on every view, for the ensembling options to combine.

A test image that could not be read gets the class prior instead: its log loss is bounded, unlike
that of whatever the heads make of a blank image.
"""
import numpy as np


def predict_views(heads, features):
    """Each head's softmax on each view of `features` (n, views, d): (folds, head views, views, n, classes)."""
    n_folds, n_head_views = (max(getattr(head, axis) for head in heads) + 1 for axis in ("fold", "view"))
    n_samples, n_views = features.shape[:2]
    predictions = np.zeros((n_folds, n_head_views, n_views, n_samples, heads[0].bias.shape[0]), np.float32)
    for head in heads:
        for view in range(n_views):
            predictions[head.fold, head.view, view] = head.predict(features[:, view])
    return predictions


def class_prior(labels, n_classes):
    """Class frequencies of the training `labels`, add-one smoothed so that no class gets 0; (classes,)."""
    counts = np.bincount(labels, minlength=n_classes) + 1.0
    return counts / counts.sum()
'''

# ---- kaggle_src/ensembles.py ----
SOURCES['kaggle_src.ensembles'] = r'''
"""The ensembling options, each scored on the out-of-fold predictions; the run submits the best fixed recipe, or a
preferred one within the noise of it (within_noise_of_best).

Each option is a fixed recipe for combining heads' predictions into one per image. The same recipe
makes an image's out-of-fold prediction (from the heads that never trained on it: one per view) and
its test prediction (from every fold's heads), so its out-of-fold log loss measures what the test
gets; the logistic regressions' test prediction comes from one fitted on every row, which the folds'
score, on fewer rows, underrates. There are only a handful, so that choosing the lowest does not itself
overfit the 10,222 rows.

Temperature scaling divides the log-probabilities by a temperature T fitted to minimise the log loss
on out-of-fold predictions. It is cross-fitted: each fold's rows are scaled with the T fitted on the
other folds' rows, so its score is never taken on the rows it was fitted on; the test predictions
get the T fitted on every row.

The blend is the other options' predictions, weighted: the weights (on the simplex) maximise the
likelihood of the true breeds, fitted as the temperature is, cross-fitted for its own score and on
every row for the test. The fitted options are submitted only when --ensemble names them: their values fit one
fold's heads' predictions, not the test's, which average every fold's heads.
"""
import math
from dataclasses import dataclass

import numpy as np

EPS = 1e-15  # Kaggle's clipping: the smallest probability a log is taken of
MAX_TEMPERATURE = 20.0  # temperatures are searched in [1 / MAX_TEMPERATURE, MAX_TEMPERATURE]


@dataclass(frozen=True)
class Option:
    name: str
    family: str  # whose predictions: "heads" (dropout + softmax), "logistic" (logistic regressions), "both", or "options"
    tta: bool  # each head on every view (test-time augmentation), not only its own
    geometric: bool  # geometric mean (renormalised) rather than arithmetic
    temperature: bool  # temperature-scaled
    description: str


OPTIONS = (
    Option("heads_mean", "heads", False, False, False, "each head on its own view, arithmetic mean (the seed's)"),
    Option("geometric", "heads", False, True, False, "each head on its own view, geometric mean"),
    Option("tta", "heads", True, False, False, "each head on both views, arithmetic mean"),
    Option("tta_geometric", "heads", True, True, False, "each head on both views, geometric mean"),
    Option(
        "tta_geometric_temperature", "heads", True, True, True,
        "each head on both views, geometric mean, temperature-scaled",
    ),
    Option("logistic", "logistic", False, False, False, "logistic regressions fitted on every view, each applied to "
           "every view, arithmetic mean"),
    Option("heads_logistic", "both", False, True, False, "the geometric mean of the heads' (tta_geometric, or "
           "geometric with one view) and the logistic regressions' predictions"),
    Option("blend", "options", False, False, False, "the options above, weighted to fit the out-of-fold rows"),
)
BLEND_ITERATIONS = 500  # EM steps for the blend's weights: each raises the likelihood
NOISE_STANDARD_ERRORS = 1.0  # a lead in out-of-fold log loss within this many standard errors is noise
# The order in which within_noise_of_best prefers the fixed recipes, by their held-out log loss on the Stanford Dogs
# photos that defaults are chosen on (benchmarks/README.md). The options that fit values on the out-of-fold rows
# (tta_geometric_temperature, blend) are scored, and submitted only when named (--ensemble): fitted to one fold's heads'
# predictions, they misjudge the test's, which average every fold's (on the mixed photos a temperature that won out of
# fold by far lost 10% held out)
PREFERENCE = ("tta_geometric", "geometric", "heads_logistic", "tta", "heads_mean", "logistic")


@dataclass
class ScoredOption:
    """One option's predictions and its out-of-fold scores."""

    option: Option
    oof: np.ndarray  # (n_train, classes)
    test: np.ndarray  # (n_test, classes)
    log_loss: float
    accuracy: float
    temperature: float | None = None  # fitted on every out-of-fold row, applied to the test; None: not scaled
    weights: dict | None = None  # the blend's: {option: weight}, fitted on every out-of-fold row

    def scores(self):
        """What metrics.json records: log loss, accuracy and, for a scaled option, its temperature; for the
        blend, its weights."""
        scores = {"log_loss": self.log_loss, "accuracy": self.accuracy}
        if self.temperature is not None:
            scores["temperature"] = self.temperature
        if self.weights is not None:
            scores["weights"] = self.weights
        return scores


def score_predictions(probabilities, labels, n_classes):
    """Multi-class log loss (as Kaggle scores it) and accuracy; for a head, an option or a submission."""
    from sklearn.metrics import accuracy_score, log_loss  # here, not above: config.py takes OPTIONS without sklearn

    probabilities = as_kaggle_scores(probabilities)
    return {
        "log_loss": float(log_loss(labels, probabilities, labels=np.arange(n_classes))),
        "accuracy": float(accuracy_score(labels, probabilities.argmax(axis=1))),
    }


def score_options(predictions, labels, folds):
    """Every option that `predictions` allow, in OPTIONS' order, with its out-of-fold scores.

    `predictions`: {family: (out-of-fold (head views, views, n, classes), test (folds, head views, views,
    n_test, classes))}. An option whose family is absent is left out, as are the tta options with one view.
    """
    scored = []
    for option in OPTIONS:
        if option.family == "both":
            by_name = {candidate.option.name: candidate for candidate in scored}
            if "logistic" in by_name:
                heads = by_name.get("tta_geometric", by_name["geometric"])
                scored.append(geometric_mean(option, [heads, by_name["logistic"]], labels))
            continue
        if option.family == "options":
            scored.append(blend(option, scored, labels, folds))
            continue
        if option.family not in predictions:
            continue
        oof, test = predictions[option.family]
        if option.tta and oof.shape[1] < 2:
            continue
        pairs = [
            (head, view) for head in range(oof.shape[0]) for view in range(oof.shape[1]) if option.tta or head == view
        ]
        oof_mean = combine(np.stack([oof[head, view] for head, view in pairs]), option.geometric)
        test_mean = combine(np.concatenate([test[:, head, view] for head, view in pairs]), option.geometric)
        temperature = None
        if option.temperature:
            temperature = fit_temperature(oof_mean, labels)
            oof_mean, test_mean = cross_fit_temperature(oof_mean, labels, folds), scale(test_mean, temperature)
        scores = score_predictions(oof_mean, labels, oof.shape[-1])
        scored.append(ScoredOption(option, oof_mean, test_mean, scores["log_loss"], scores["accuracy"], temperature))
    return scored


def geometric_mean(option, scored, labels):
    """The options `scored` combined by their predictions' geometric mean, renormalised, out of fold and on the test."""
    oof = combine(np.stack([candidate.oof for candidate in scored]), geometric=True)
    test = combine(np.stack([candidate.test for candidate in scored]), geometric=True)
    scores = score_predictions(oof, labels, oof.shape[-1])
    return ScoredOption(option, oof, test, scores["log_loss"], scores["accuracy"])


def blend(option, scored, labels, folds):
    """The options `scored` weighted to maximise the likelihood of `labels` out of fold: each fold's rows with
    the weights fitted on the other folds' rows, the test with those fitted on every row."""
    rows = np.arange(len(labels))
    truth = np.stack([candidate.oof[rows, labels] for candidate in scored])  # (options, n): p of the true breed
    oof = np.empty_like(scored[0].oof)
    for train_index, validation_index in folds:
        weights = fit_blend_weights(truth[:, train_index])
        oof[validation_index] = np.tensordot(weights, [candidate.oof[validation_index] for candidate in scored], 1)
    weights = fit_blend_weights(truth)
    test = np.tensordot(weights, [candidate.test for candidate in scored], 1)
    scores = score_predictions(oof, labels, oof.shape[-1])
    return ScoredOption(option, oof, test, scores["log_loss"], scores["accuracy"],
                        weights={candidate.option.name: float(weight) for candidate, weight in zip(scored, weights)})


def fit_blend_weights(truth):
    """Weights on the simplex that maximise mean(log(weights @ truth)), `truth` (options, n) being each option's
    probability of each row's true class: the mixture-proportion EM update, which never lowers the likelihood."""
    truth = np.clip(np.asarray(truth, np.float64), EPS, 1)
    weights = np.full(len(truth), 1 / len(truth))
    for _ in range(BLEND_ITERATIONS):
        weights *= (truth / (weights @ truth)).mean(axis=1)
        weights /= weights.sum()
    return weights


def scored_names(flips, logistic):
    """The names of the options that a run with these settings scores, in OPTIONS' order (score_options finds
    the same from the predictions): the tta ones need the flipped view, logistic the logistic regressions."""
    return [
        option.name for option in OPTIONS
        if (flips or not option.tta) and (logistic or option.family not in ("logistic", "both"))
    ]


def choose(scored, labels, config):
    """The option that `config`'s ensemble setting names; if none, the preferred one within the noise of the best
    (within_noise_of_best)."""
    if config.ensemble:
        return next(candidate for candidate in scored if candidate.option.name == config.ensemble)
    return within_noise_of_best(scored, labels)


def best(scored):
    """The option with the lowest out-of-fold log loss; on a tie the earlier one (heads_mean before the rest)."""
    return min(scored, key=lambda candidate: candidate.log_loss)


def within_noise_of_best(scored, labels):
    """The first fixed recipe in PREFERENCE whose out-of-fold log loss is within NOISE_STANDARD_ERRORS standard errors
    of the best fixed recipe's: the one-standard-error rule, on the per-image difference of the two options' log loss
    (paired, as both predict the same images).

    On a few hundred images the lowest out-of-fold score is often luck, and it misleads in a known direction: an
    image's out-of-fold prediction comes from its one fold's heads, its test prediction from every fold's, whose
    arithmetic mean is the less confident the more heads it averages, where the geometric mean is not; and a value
    fitted on the out-of-fold predictions (a temperature, the blend's weights) fits that fold's heads, not the test's.
    """
    fixed = [candidate for candidate in scored if candidate.option.name in PREFERENCE]
    top = best(fixed)
    for candidate in sorted(fixed, key=lambda candidate: PREFERENCE.index(candidate.option.name)):
        difference = per_image_log_loss(candidate.oof, labels) - per_image_log_loss(top.oof, labels)
        if difference.mean() <= NOISE_STANDARD_ERRORS * difference.std() / math.sqrt(len(labels)):
            return candidate
    return top


def per_image_log_loss(probabilities, labels):
    """Each image's log loss, -log p(true class), as Kaggle scores it: their mean is score_predictions' log loss."""
    return -np.log(as_kaggle_scores(probabilities)[np.arange(len(labels)), labels])


def as_kaggle_scores(probabilities):
    """`probabilities` (n, classes) as Kaggle's metric takes them: clipped to [EPS, 1 - EPS], rows renormalised."""
    probabilities = np.clip(np.asarray(probabilities, np.float64), EPS, 1 - EPS)
    return probabilities / probabilities.sum(axis=1, keepdims=True)


def combine(members, geometric):
    """The mean over `members` (k, n, classes) for each row: arithmetic, or geometric renormalised to sum to 1."""
    if geometric:
        return _softmax(np.log(np.clip(members, EPS, 1)).mean(axis=0, dtype=np.float64))
    return members.mean(axis=0, dtype=np.float64)


def scale(probabilities, temperature):
    """softmax(log p / T) for each row p of `probabilities`."""
    return _softmax(np.log(np.clip(probabilities, EPS, 1)) / temperature)


def fit_temperature(probabilities, labels):
    """The T in [1/20, 20] that minimises the log loss of scale(probabilities, T), by golden-section search.

    The log loss is convex in 1/T, so it has one minimum along log T, which the search narrows to.
    """
    log_p = np.log(np.clip(np.asarray(probabilities, np.float64), EPS, 1))
    rows = np.arange(len(labels))

    def loss(log_temperature):
        logits = log_p / math.exp(log_temperature)
        return np.mean(_logsumexp(logits) - logits[rows, labels])

    low, high, ratio = -math.log(MAX_TEMPERATURE), math.log(MAX_TEMPERATURE), (math.sqrt(5) - 1) / 2
    for _ in range(40):
        left, right = high - ratio * (high - low), low + ratio * (high - low)
        if loss(left) < loss(right):
            high = right
        else:
            low = left
    return math.exp((low + high) / 2)


def cross_fit_temperature(probabilities, labels, folds):
    """`probabilities` scaled fold by fold, each validation fold with the T fitted on the other folds' rows."""
    scaled = np.empty_like(probabilities)
    for train_index, validation_index in folds:
        temperature = fit_temperature(probabilities[train_index], labels[train_index])
        scaled[validation_index] = scale(probabilities[validation_index], temperature)
    return scaled


def _logsumexp(logits):
    top = logits.max(axis=1)
    return top + np.log(np.exp(logits - top[:, None]).sum(axis=1))


def _softmax(logits):
    return np.exp(logits - _logsumexp(logits)[:, None])
'''

# ---- kaggle_src/write_outputs.py ----
SOURCES['kaggle_src.write_outputs'] = r'''
"""Stage 6: submission.csv, checked against sample_submission.csv before it is written, every ensembling
option's test predictions in the same format, the submitted option's out-of-fold predictions, metrics.json
and report.md.

Every file is written to a temporary name and renamed into place, so a failed run never leaves a
half-written file nor replaces a good submission with a bad one.
"""
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd


class SubmissionError(ValueError):
    """A submission that Kaggle would reject or score wrongly."""


def write_predictions(options, chosen, competition, readable, output_dir, config):
    """Write every scored option's test predictions to test_predictions/, the `chosen` one's as submission.csv,
    and its out-of-fold predictions of the `readable` training images (their indices) to oof_predictions.csv.

    A smoke run's predictions cover a few images: its submission is validated, not written, nor are the others,
    so that none is taken for a submission.
    """
    test_ids, classes = competition.test_ids, competition.classes
    submission = make_submission(test_ids, classes, chosen.test)
    if config.smoke:
        validate_submission(submission, test_ids, classes)
        return
    write_test_predictions({scored.option.name: scored.test for scored in options}, test_ids, classes,
                           output_dir / "test_predictions")
    write_submission(submission, test_ids, classes, output_dir / "submission.csv")
    write_oof_predictions(
        [competition.train_ids[index] for index in readable],
        [classes[competition.train_labels[index]] for index in readable],
        classes,
        chosen.oof,
        output_dir / "oof_predictions.csv",
    )


def make_submission(test_ids, classes, probabilities):
    """The submission frame: id, then one column per class, each row normalised to sum to 1."""
    probabilities = np.asarray(probabilities, np.float64)
    expected = (len(test_ids), len(classes))
    if probabilities.shape != expected:
        raise SubmissionError(f"predictions of shape {probabilities.shape}: expected {expected}")
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
    submission = pd.DataFrame(probabilities, columns=list(classes))
    submission.insert(0, "id", list(test_ids))
    return submission


def validate_submission(submission, test_ids, classes):
    """Raise SubmissionError unless `submission` is id + `classes` columns and `test_ids` rows, in
    sample_submission.csv's order, with finite probabilities in [0, 1] that sum to 1 per row."""
    if list(submission.columns) != ["id", *classes]:
        raise SubmissionError("columns differ from sample_submission.csv's (names or order)")
    if submission["id"].duplicated().any():
        raise SubmissionError(f"id {submission['id'][submission['id'].duplicated()].iloc[0]!r} appears twice")
    if submission["id"].tolist() != list(test_ids):
        missing = set(test_ids) - set(submission["id"])
        raise SubmissionError(
            f"ids differ from sample_submission.csv's: {len(missing)} missing"
            if missing
            else "ids differ from sample_submission.csv's (extra ids or another order)"
        )
    values = submission.iloc[:, 1:].to_numpy(np.float64)
    if not np.isfinite(values).all():
        raise SubmissionError("probabilities are not all finite")
    if (values < 0).any() or (values > 1).any():
        raise SubmissionError("probabilities outside [0, 1]")
    worst = np.abs(values.sum(axis=1) - 1).max()
    if worst > 1e-6:
        raise SubmissionError(f"row sums differ from 1 by up to {worst:.2g}: expected each row to sum to 1")


def write_submission(submission, test_ids, classes, path):
    """Validate, then write `submission` atomically to `path`."""
    validate_submission(submission, test_ids, classes)
    write_atomically(path, lambda temporary: submission.to_csv(temporary, index=False, float_format="%.7g"))


def write_test_predictions(predictions, test_ids, classes, folder):
    """Write each option's test predictions, {option: (n_test, classes)}, to `folder`/<option>.csv as a
    validated submission, so that a competitor can blend them with other kernels'; remove the CSVs of options
    this run did not score, so that the folder holds this run's options only."""
    folder = Path(folder)
    folder.mkdir(exist_ok=True)
    for name, probabilities in predictions.items():
        path = folder / f"{name}.csv"
        try:
            write_submission(make_submission(test_ids, classes, probabilities), test_ids, classes, path)
        except SubmissionError as error:
            raise SubmissionError(f"{folder.name}/{path.name}: {error}") from None
    for path in folder.glob("*.csv"):
        if path.stem not in predictions:
            path.unlink()


def write_oof_predictions(train_ids, breeds, classes, probabilities, path):
    """Write out-of-fold predictions atomically: id, breed (the true one), then one column per class, each row
    normalised as the submission's are, so that a blend with other kernels' predictions can be scored out of fold."""
    predictions = make_submission(train_ids, classes, probabilities)
    predictions.insert(1, "breed", list(breeds))
    write_atomically(path, lambda temporary: predictions.to_csv(temporary, index=False, float_format="%.7g"))


def write_metrics(metrics, path):
    """Write the metrics dict as indented JSON, atomically."""
    write_atomically(path, lambda temporary: Path(temporary).write_text(json.dumps(metrics, indent=2) + "\n"))


def write_report(text, path):
    """Write the report's markdown `text`, atomically."""
    write_atomically(path, lambda temporary: Path(temporary).write_text(text))


def write_atomically(path, write):
    """Write `path` by `write(temporary)` to a temporary name beside it, then rename that into place: a failed write
    leaves no half-written file and keeps the old one."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
'''

# ---- kaggle_src/report.py ----
SOURCES['kaggle_src.report'] = r'''
"""A run's account: metrics.json's content, gathered from what the stages returned, and report.md, a short
reading of it: one line on the submitted option, the ensembling options' out-of-fold scores, the breeds most
often mistaken for each other, links to the pictures, and the time per stage."""
import math

import numpy as np

from .ensembles import NOISE_STANDARD_ERRORS, OPTIONS, best, score_predictions


def cv_metrics(competition, failed, labels, heads, oof, options, chosen, config):
    """What the cross-validation found: out-of-fold scores per view's heads and for the submitted option (as
    `ensemble`); every option's scores; the `chosen` option, the best out of fold (the same unless the ensemble
    setting named another or a preferred one was within the noise of it) and its log loss below heads_mean's;
    each head's validation scores; the breed pairs it confused most; the unreadable images by id (`failed`: their
    indices per split); and the counts.

    `labels` are the readable training images' classes; `heads` and `oof` the softmax heads and their
    out-of-fold predictions (head views, views, n, classes).
    """
    n_classes, views = len(competition.classes), config.views
    per_view = {name: score_predictions(oof[index, index], labels, n_classes) for index, name in enumerate(views)}
    baseline = next(scored for scored in options if scored.option.name == "heads_mean")
    return {
        "oof": {**per_view, "ensemble": {"log_loss": chosen.log_loss, "accuracy": chosen.accuracy}},
        "options": {scored.option.name: scored.scores() for scored in options},
        "chosen": {
            "option": chosen.option.name,
            "best_out_of_fold": best(options).option.name,
            "set_by_ensemble": bool(config.ensemble),  # else the preferred one within the noise of the best
            "improvement_over_heads_mean": baseline.log_loss - chosen.log_loss,
        },
        "folds": [
            {
                "fold": head.fold,
                "view": views[head.view],
                "epochs": head.epochs,
                "log_loss": head.val_log_loss,
                "accuracy": head.val_accuracy,
            }
            for head in heads
        ],
        "confused": confused_pairs(chosen.oof, labels, competition.classes),
        "unreadable": {split: [competition.ids(split)[index] for index in failed[split]] for split in failed},
        "counts": {
            "train_images": len(competition.train_ids),
            "test_images": len(competition.test_ids),
            "classes": n_classes,
            "folds": config.n_folds,
            "views": len(views),
            "heads": len(heads),
            "features": int(heads[0].kernel.shape[0]),
        },
        "chance_log_loss": math.log(n_classes),
    }


def run_metrics(cv, seconds, runtime, config, build):
    """metrics.json's content: a one-line summary, then the cross-validation's `cv` (cv_metrics), the `seconds`
    per stage, the `runtime`, the config, whether it was a smoke run and, for a built kernel, the `build`."""
    metrics = {**cv, "seconds": seconds, "runtime": runtime, "config": config.as_dict()}
    if config.smoke:
        metrics["smoke"] = config.smoke
    if build is not None:
        metrics["build"] = build
    return {"summary": summary_line(metrics), **metrics}


def confused_pairs(probabilities, labels, classes, top=10):
    """The `top` breed pairs most often mistaken for each other out of fold, both directions summed, most first."""
    counts = np.zeros((len(classes), len(classes)), np.int64)
    np.add.at(counts, (labels, np.asarray(probabilities).argmax(axis=1)), 1)
    np.fill_diagonal(counts, 0)
    first, second = np.triu_indices(len(classes), 1)
    both = counts[first, second] + counts[second, first]
    order = [index for index in np.argsort(-both, kind="stable") if both[index]][:top]
    return [
        {
            "breeds": [classes[first[index]], classes[second[index]]],
            "count": int(both[index]),
            "first_as_second": int(counts[first[index], second[index]]),
            "second_as_first": int(counts[second[index], first[index]]),
        }
        for index in order
    ]


def summary_line(metrics):
    """The run in one line, as metrics.json and report.md open: the submitted option, its out-of-fold log loss
    and accuracy, and the wall time; a smoke run says first that it is one."""
    option = metrics["chosen"]["option"]
    scores = metrics["options"][option]
    smoke = (f"SMOKE RUN, {metrics['smoke']} images per breed, no submission.csv: "
             if metrics.get("smoke") else "")
    return (
        f"{smoke}submitted {option}: out-of-fold log loss {scores['log_loss']:.4f}, accuracy {scores['accuracy']:.3f}; "
        f"{metrics['seconds']['total']:.0f} s"
    )


def report_markdown(metrics):
    """The report's text, from a run's metrics (as metrics.json holds them)."""
    chosen, options, counts = metrics["chosen"], metrics["options"], metrics["counts"]
    descriptions = {option.name: option.description for option in OPTIONS}
    baseline, gain = options["heads_mean"]["log_loss"], chosen["improvement_over_heads_mean"]
    set_by = (
        "" if chosen["option"] == chosen["best_out_of_fold"]
        else f" (set by --ensemble; the best out of fold is {chosen['best_out_of_fold']})" if chosen["set_by_ensemble"]
        else f" (the preferred fixed recipe within {NOISE_STANDARD_ERRORS:g} standard error of the best one out of "
             f"fold; the lowest of all: {chosen['best_out_of_fold']})"
    )
    lines = [
        f"# {summary_line(metrics)}",
        "",
        f"## Ensembling options, out of fold ({counts['train_images']} training images, {counts['folds']} folds)",
        "",
        "| option | what | log loss | accuracy |",
        "| --- | --- | --- | --- |",
        *(
            f"| {_bold(name, name == chosen['option'])} | {descriptions[name]}"
            + (f" (T = {scores['temperature']:.3f})" if "temperature" in scores else "")
            + (" (" + ", ".join(f"{option} {weight:.2f}" for option, weight in scores["weights"].items()
                               if weight >= 0.005) + ")" if "weights" in scores else "")
            + f" | {scores['log_loss']:.4f} | {scores['accuracy']:.4f} |"
            for name, scores in options.items()
        ),
        "",
        f"Submitted: **{chosen['option']}**{set_by}, out-of-fold log loss {options[chosen['option']]['log_loss']:.4f}, "
        f"{abs(gain):.4f} ({100 * abs(gain) / baseline:.1f}%) {'below' if gain >= 0 else 'above'} heads_mean, the "
        f"seed's heads ({baseline:.4f}). Chance: {metrics['chance_log_loss']:.4f}.",
        "",
        f"## Most-confused breed pairs ({chosen['option']}, out of fold)",
        "",
        *(
            [
                "| breeds | mistaken | first as second | second as first |",
                "| --- | --- | --- | --- |",
                *(
                    f"| {pair['breeds'][0]} / {pair['breeds'][1]} | {pair['count']} | {pair['first_as_second']} "
                    f"| {pair['second_as_first']} |"
                    for pair in metrics["confused"]
                ),
            ]
            if metrics["confused"]
            else ["None: every out-of-fold prediction's top breed is the true one."]
        ),
        "",
        "## Pictures",
        "",
        *picture_lines(metrics["pictures"]),
        "",
        "## Time per stage",
        "",
        "| stage | seconds |",
        "| --- | --- |",
        *(f"| {name} | {seconds:.1f} |" for name, seconds in metrics["seconds"].items()),
        "",
        "Images load in background threads while features are extracted, so load_images overlaps "
        "extract_features, and total (the wall time) is not the stages' sum.",
    ]
    return "\n".join(lines) + "\n"


def picture_lines(pictures):
    """report.md's links to the pictures (pictures.draw_pictures), each after a line on what it shows."""
    mistakes, confused, calibration = pictures["mistakes"], pictures["confused"], pictures["calibration"]
    lines = []
    if mistakes:
        mistaken = sum(photo["predicted"] != photo["breed"] for photo in mistakes["photos"])
        lines += [f"The {len(mistakes['photos'])} training photos of the highest out-of-fold log loss, {mistaken} "
                  f"mistaken: the label or the model? ![mistakes]({mistakes['file']})", ""]
    else:
        lines += ["No photo sheets: no training photo could be read.", ""]
    if confused:
        lines += [f"The {len(confused['pairs'])} most-confused breed pairs, the photos of each most taken for the "
                  f"other first: ![confused]({confused['file']})", ""]
    elif mistakes:
        lines += ["No sheet of confused breeds: none was taken for another.", ""]
    return [*lines, f"Calibration out of fold, confidence against accuracy (expected calibration error "
                    f"{calibration['expected_calibration_error']:.3f}): ![calibration]({calibration['file']})"]


def _bold(text, bold):
    return f"**{text}** (submitted)" if bold else text
'''

# ---- kaggle_src/pictures.py ----
SOURCES['kaggle_src.pictures'] = r'''
"""The pictures a competitor looks at before reading report.md: the training photos the submitted option gets most
wrong (mistakes.jpg), photos of the breeds it confuses most (confused.jpg), its calibration out of fold
(calibration.png) and, for leaderboard.py --scores, each submission's CV log loss beside its public score
(experiments.png).

The photo sheets are drawn with OpenCV from THUMBNAIL-px copies of the training images, made while a run holds them
in memory (make_thumbnails), so that no image is decoded twice and the full-size array can go; a run that read saved
features decodes the few photos the sheets show. The plots use matplotlib's object-oriented API on its Agg canvas:
no pyplot, no display. Each file is written to a temporary name and renamed, as every output is.
"""
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .ensembles import as_kaggle_scores
from .errors import warn
from .load_images import load_image
from .write_outputs import write_atomically

THUMBNAIL = 96  # px, a training image's copy kept for the sheets: 0.28 GB for the competition's 10,222 images
SCALE = 2  # a thumbnail is drawn at twice its size
PAD = 4  # px around each photo
FONT, FONT_SCALE, TITLE_SCALE, LINE = cv2.FONT_HERSHEY_SIMPLEX, 0.4, 0.5, 14  # the font, its scales, px a caption line
CAPTION_LINES = 4  # the true breed and the predicted one, two lines each at most
CELL_WIDTH = THUMBNAIL * SCALE + 2 * PAD
CELL_HEIGHT = THUMBNAIL * SCALE + 2 * PAD + CAPTION_LINES * LINE
HEADER = 28  # px of the title line above the cells
COLUMNS = 6  # photos per row of a sheet
MISTAKES = 24  # photos on mistakes.jpg
PAIRS, PER_SIDE = 4, 3  # confused.jpg: a row per pair, PER_SIDE photos of each breed
BINS = 10  # calibration.png's confidence bins, of equal width
JPEG_QUALITY = 85
MISTAKES_FILE, CONFUSED_FILE, CALIBRATION_FILE = "mistakes.jpg", "confused.jpg", "calibration.png"
BLACK, GREEN, RED = (0, 0, 0), (0, 110, 0), (190, 0, 0)  # RGB


def make_thumbnails(images):
    """THUMBNAIL-px copies of `images` (n, size, size, 3) uint8, made while a run holds its training images, so that
    the sheets need not decode them again."""
    thumbnails = np.empty((len(images), THUMBNAIL, THUMBNAIL, 3), np.uint8)
    for index, image in enumerate(images):
        thumbnails[index] = shrink(image, THUMBNAIL)
    return thumbnails


def shrink(image, size):
    """`image` resized to `size` x `size`: from more than twice as large, bilinear to twice the size, then averaged
    2 x 2 (INTER_AREA's fast path at an integer ratio), without aliasing at a third of INTER_AREA's time."""
    if image.shape[0] > 2 * size:
        image = cv2.resize(image, (2 * size, 2 * size), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


@dataclass
class Photos:
    """The submitted option's out-of-fold `probabilities` (n, classes) of the readable training photos, their
    `labels`, `ids` and `classes`, and `photo(row)`: that photo's thumbnail, or None if it cannot be read."""

    probabilities: np.ndarray
    labels: np.ndarray
    classes: list
    ids: list
    photo: Callable[[int], np.ndarray | None]

    def readable(self, rows, count):
        """The first `count` of `rows` whose photo can be read: [(row, thumbnail)]."""
        found = []
        for row in rows:
            if len(found) == count:
                break
            thumbnail = self.photo(row)
            if thumbnail is not None:
                found.append((row, thumbnail))
        return found

    def record(self, row):
        """What metrics.json records of a photo on a sheet: its id, true and predicted breeds, and the probability
        of each."""
        label, predicted = self.labels[row], int(self.probabilities[row].argmax())
        return {"id": self.ids[row], "breed": self.classes[label], "p_breed": float(self.probabilities[row, label]),
                "predicted": self.classes[predicted], "p_predicted": float(self.probabilities[row, predicted])}


def draw_pictures(chosen, labels, competition, readable, thumbnails, confused, output_dir):
    """Draw mistakes.jpg, confused.jpg and calibration.png of the `chosen` option's out-of-fold predictions of the
    `readable` training images (their indices; `labels`, their classes) into `output_dir`, the breed pairs it
    confused most being `confused` (report.confused_pairs); return what metrics.json records of them (None for a
    sheet not drawn, whose old file is removed).

    The photos come from `thumbnails` (make_thumbnails of every training image) or, in a run that read its features
    (None), from the files in train/: the few the sheets show. Unreadable photos are left out.
    """
    option = chosen.option.name
    probabilities = as_kaggle_scores(chosen.oof)
    if thumbnails is not None:
        def photo(row):
            return thumbnails[readable[row]]
    else:
        paths = competition.image_paths("train")

        @functools.cache
        def photo(row):
            return load_image(paths[readable[row]], THUMBNAIL)
    photos = Photos(probabilities, labels, competition.classes, [competition.train_ids[i] for i in readable], photo)
    pictures = {"mistakes": draw_mistakes(photos, option, output_dir / MISTAKES_FILE), "confused": None}
    if pictures["mistakes"] is None:
        warn(f"{competition.directory / 'train'}: no training photo could be read; {MISTAKES_FILE} and "
             f"{CONFUSED_FILE} not drawn")
    else:
        pictures["confused"] = draw_confused(photos, confused, option, output_dir / CONFUSED_FILE)
    pictures["calibration"] = draw_calibration(probabilities, labels, option, chosen.log_loss,
                                               output_dir / CALIBRATION_FILE)
    for name, file in (("mistakes", MISTAKES_FILE), ("confused", CONFUSED_FILE)):
        if pictures[name] is None:
            (output_dir / file).unlink(missing_ok=True)
    return pictures


def draw_mistakes(photos, option, path):
    """Write to `path` the MISTAKES readable photos of the highest out-of-fold log loss, highest first, each captioned
    with its true and predicted breeds and their probabilities (as many as there are, mistaken or not: the title
    says how many are); return {file, photos: their records}, or None when no photo can be read."""
    loss = -np.log(photos.probabilities[np.arange(len(photos.labels)), photos.labels])
    worst = photos.readable(np.argsort(-loss, kind="stable"), MISTAKES)
    if not worst:
        return None
    records = [photos.record(row) for row, _ in worst]
    mistaken = sum(record["predicted"] != record["breed"] for record in records)
    title = (f"The {len(records)} training photos of the highest out-of-fold log loss ({option}), "
             f"{mistaken} of them mistaken")
    write_jpeg(path, draw_sheet([thumbnail for _, thumbnail in worst], [caption(record) for record in records], title))
    return {"file": path.name, "photos": records}


def draw_confused(photos, confused, option, path):
    """Write to `path` a row for each of the first PAIRS `confused` pairs of breeds: PER_SIDE readable photos of
    each breed, those given the other breed's highest probability first; return {file, pairs: [{breeds, ids: [the
    first breed's, the second's]}]}, or None when no pair was confused."""
    if not confused:
        return None
    cells, pairs = [], []
    for pair in confused[:PAIRS]:
        first, second = (photos.classes.index(breed) for breed in pair["breeds"])
        ids = []
        for breed, other in ((first, second), (second, first)):
            rows = np.flatnonzero(photos.labels == breed)
            side = photos.readable(rows[np.argsort(-photos.probabilities[rows, other], kind="stable")], PER_SIDE)
            ids.append([photos.ids[row] for row, _ in side])
            cells += [(thumbnail, caption(photos.record(row))) for row, thumbnail in side]
            cells += [(None, [])] * (PER_SIDE - len(side))
        pairs.append({"breeds": pair["breeds"], "ids": ids})
    title = f"The {len(pairs)} breed pairs most confused out of fold ({option}): the photos most taken for the other"
    write_jpeg(path, draw_sheet([cell[0] for cell in cells], [cell[1] for cell in cells], title))
    return {"file": path.name, "pairs": pairs}


def caption(record):
    """A photo's caption lines [(text, RGB colour)]: its true breed and probability, then the predicted ones, in red
    when mistaken."""
    width = THUMBNAIL * SCALE
    colour = GREEN if record["predicted"] == record["breed"] else RED
    return ([(line, GREEN) for line in fit(f"true {record['p_breed']:.2f} {breed_name(record['breed'])}", width, 2)]
            + [(line, colour) for line in fit(f"pred {record['p_predicted']:.2f} "
                                              f"{breed_name(record['predicted'])}", width, 2)])


def breed_name(breed):
    """A breed as a caption shows it, words apart so that a long one wraps between them."""
    return breed.replace("_", " ")


def draw_sheet(photos, captions, title):
    """A white sheet under a `title` line, COLUMNS cells a row, each a photo (THUMBNAIL px RGB, or None: left blank)
    drawn SCALE times as large above its caption lines [(text, RGB colour)]; as BGR, for cv2.imencode."""
    rows = math.ceil(len(photos) / COLUMNS)
    sheet = np.full((HEADER + rows * CELL_HEIGHT, COLUMNS * CELL_WIDTH, 3), 255, np.uint8)
    [title] = fit(title, sheet.shape[1] - 2 * PAD, 1, TITLE_SCALE)
    cv2.putText(sheet, title, (PAD, HEADER - 9), FONT, TITLE_SCALE, BLACK, 1, cv2.LINE_AA)
    side = THUMBNAIL * SCALE
    for index, (photo, lines) in enumerate(zip(photos, captions)):
        top, left = HEADER + index // COLUMNS * CELL_HEIGHT + PAD, index % COLUMNS * CELL_WIDTH + PAD
        if photo is not None:
            sheet[top:top + side, left:left + side] = cv2.resize(photo, (side, side), interpolation=cv2.INTER_CUBIC)
        for number, (text, colour) in enumerate(lines, 1):
            cv2.putText(sheet, text, (left, top + side + number * LINE), FONT, FONT_SCALE, colour, 1, cv2.LINE_AA)
    return cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)


def fit(text, width, max_lines, scale=FONT_SCALE):
    """`text` in at most `max_lines` lines of at most `width` px in FONT at `scale`, broken after a space where it
    can be, else anywhere; the last line ends in "..." when the rest does not fit."""
    def fits(line):
        return cv2.getTextSize(line, FONT, scale, 1)[0][0] <= width

    lines, rest = [], text
    while rest and len(lines) < max_lines:
        end = len(rest)
        while end > 1 and not fits(rest[:end]):
            end -= 1
        if end < len(rest) and " " in rest[1:end + 1]:
            end = rest.rindex(" ", 1, end + 1) + 1
        lines.append(rest[:end].rstrip())
        rest = rest[end:].lstrip()
    if rest:
        last = lines[-1]
        while last and not fits(last + "..."):
            last = last[:-1]
        lines[-1] = last + "..."
    return lines


def draw_calibration(probabilities, labels, option, log_loss, path):
    """Write to `path` the reliability diagram of out-of-fold `probabilities`: in BINS bins of confidence (the top
    probability), the accuracy, the count, and each bin's mean confidence against its accuracy beside the line of
    perfect calibration, titled with the `log_loss` and the expected calibration error; return {file, log_loss,
    expected_calibration_error, bins: the non-empty ones}."""
    confidence, right = probabilities.max(axis=1), probabilities.argmax(axis=1) == labels
    edges = np.linspace(0, 1, BINS + 1)
    which = np.digitize(confidence, edges[1:-1])
    bins = [
        {"from": float(edges[index]), "to": float(edges[index + 1]), "count": int(inside.sum()),
         "confidence": float(confidence[inside].mean()), "accuracy": float(right[inside].mean())}
        for index, inside in ((index, which == index) for index in range(BINS)) if inside.any()
    ]
    error = sum(row["count"] * abs(row["accuracy"] - row["confidence"]) for row in bins) / len(labels)
    figure = Figure(figsize=(6.4, 4.8), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    bars = axes.bar([row["from"] for row in bins], [row["accuracy"] for row in bins], width=1 / BINS, align="edge",
                    color="#9ecae1", edgecolor="black", label="accuracy in the bin (count above)")
    axes.bar_label(bars, labels=[f"{row['count']:,}" for row in bins], padding=2, fontsize=8)
    axes.plot([row["confidence"] for row in bins], [row["accuracy"] for row in bins], "o-", color="#d62728",
              label="mean confidence, accuracy")
    axes.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
    axes.set(xlim=(0, 1), ylim=(0, 1.1), xlabel="confidence: the top probability", ylabel="accuracy",
             title=f"{option}, out of fold\nlog loss {log_loss:.4f}, expected calibration error {error:.3f}")
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=3, fontsize=8, frameon=False)
    write_png(path, figure)
    return {"file": path.name, "log_loss": log_loss, "expected_calibration_error": error, "bins": bins}


def draw_experiments(rows, path):
    """Write to `path` experiments.png from the experiments log's `rows` (leaderboard.read_log): each submission's CV
    log loss and public score in order, and the one against the other beside the line y = x, where a widening gap
    shows. Return the submissions [(number, CV log loss or None, public score or None)]; when none has a public
    score, draw nothing (an old picture is removed) and return []."""
    submissions = [(number, _number(row["cv_log_loss"]), _number(row["public_score"]))
                   for number, row in enumerate((row for row in rows if row["action"] == "submit"), 1)]
    if not any(public is not None for _, _, public in submissions):
        Path(path).unlink(missing_ok=True)
        return []
    figure = Figure(figsize=(11, 4.5), dpi=100, layout="constrained")
    in_order, against = figure.subplots(1, 2)
    for column, label, marker in ((1, "CV log loss (out of fold)", "o-"), (2, "public leaderboard", "s-")):
        points = [(row[0], row[column]) for row in submissions if row[column] is not None]
        in_order.plot(*zip(*points), marker, label=label)
    in_order.set(xlabel="submission", ylabel="log loss", title="In order")
    in_order.xaxis.get_major_locator().set_params(integer=True)
    in_order.legend()
    both = [row for row in submissions if None not in row]
    against.plot([cv for _, cv, _ in both], [public for _, _, public in both], "o", color="#d62728")
    for number, cv, public in both:
        against.annotate(str(number), (cv, public), textcoords="offset points", xytext=(4, 4), fontsize=8)
    scores = [score for row in submissions for score in row[1:] if score is not None]
    margin = 0.08 * (max(scores) - min(scores)) or 0.01
    low, high = min(scores) - margin, max(scores) + margin
    against.plot([low, high], [low, high], "--", color="grey", label="y = x: public as CV")
    against.set(xlim=(low, high), ylim=(low, high), xlabel="CV log loss", ylabel="public score",
                title="Public against CV, by submission", aspect="equal")
    against.legend(loc="upper left")
    scored = sum(public is not None for _, _, public in submissions)
    figure.suptitle(f"{len(submissions)} submissions, {scored} with a public score")
    write_png(path, figure)
    return submissions


def write_jpeg(path, sheet):
    """Write a BGR `sheet` as a JPEG, atomically."""
    data = cv2.imencode(".jpg", sheet, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1]
    write_atomically(path, lambda temporary: Path(temporary).write_bytes(data.tobytes()))


def write_png(path, figure):
    """Write a matplotlib `figure` as a PNG through the Agg canvas, atomically."""
    FigureCanvasAgg(figure)
    write_atomically(path, lambda temporary: figure.savefig(temporary, format="png"))


def _number(text):
    """A float from the experiments log's `text`, or None where it holds none."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return None
'''

# ---- kaggle_src/pipeline.py ----
SOURCES['kaggle_src.pipeline'] = r'''
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
'''


class SourceImporter(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports SOURCES as real modules, registering their lines so tracebacks show them."""

    def find_spec(self, name, path=None, target=None):
        if name in SOURCES:
            return importlib.util.spec_from_loader(name, self, is_package=name == "kaggle_src")
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        name = module.__name__
        filename = "kaggle_src/__init__.py" if name == "kaggle_src" else name.replace(".", "/") + ".py"
        source = SOURCES[name][1:]
        linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
        exec(compile(source, filename, "exec"), module.__dict__)


sys.meta_path.insert(0, SourceImporter())

if __name__ == "__main__":
    from kaggle_src.pipeline import main

    exit_code = main(settings=BUILD_SETTINGS, build=BUILD)
    if exit_code:  # a clean run returns normally: no SystemExit for a notebook to show
        sys.exit(exit_code)
