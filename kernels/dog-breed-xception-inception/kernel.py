"""Dog Breed Identification by transfer learning: one offline Kaggle kernel.

Finds the competition and the ImageNet weights under /kaggle/input, loads every image as uint8,
extracts the 4096-d Xception + InceptionV3 features of each image and of its horizontal flip on the
GPU, trains 5-fold x 2-view dropout + softmax heads, and writes the mean of their
predictions to /kaggle/working/submission.csv, with the cross-validated scores in metrics.json.

Built by build_kernel.py from the kaggle_src package; edit the package, not this file.
    source commit:   cdc4508
    sources sha256:  3d02f5eb411477a6ddac65dcd4c589c05480fb7e52cd9c5d7e4e8624544c37f4
    build settings:  none (the defaults)
    configuration:   backbones=('xception', 'inception_v3'), image_size=299, flips=True, n_folds=5,
                     dropout=0.5, learning_rate=0.001, max_epochs=50, patience=5,
                     head_batch_size=128, extract_batch_size=0, precision='auto', xla='auto',
                     n_jobs=-1, seed=2017, dry_run=False,
                     weights_dataset='gaborfodor/keras-pretrained-models'
Run here:   python kernel.py --input-root input_stub --output-dir working --dry-run
On Kaggle:  no arguments: /kaggle/input -> /kaggle/working, the real weights.
"""
import importlib.abc
import importlib.util
import linecache
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the log

BUILD_SETTINGS = {}  # Config values chosen at build time; command-line flags still win
BUILD = {'commit': 'cdc4508', 'sources_sha256': '3d02f5eb411477a6ddac65dcd4c589c05480fb7e52cd9c5d7e4e8624544c37f4', 'settings': {}}

# The kaggle_src package, one module per string; each string starts after the newline that follows r'''.
SOURCES = {}
# ---- kaggle_src/__init__.py ----
SOURCES['kaggle_src'] = r'''
"""Dog Breed Identification by transfer learning: Xception + InceptionV3 features, 5-fold x 2-view dense heads.

Stages, one module each: find_inputs, load_images, extract_features, train_heads, predict,
write_outputs; pipeline runs them in order. Run with `python -m kaggle_src --help`.
"""
'''

# ---- kaggle_src/config.py ----
SOURCES['kaggle_src.config'] = r'''
"""Every setting of a run in one place, with the seed's values as defaults, checked at the door."""
import argparse
import dataclasses
from dataclasses import dataclass

from .backbones import BACKBONES

DRY_RUN_IMAGE_SIZE = 96  # what --dry-run uses unless --image-size is given
PRECISIONS = ("auto", "float32", "float16", "bfloat16")
XLA_MODES = ("auto", "on", "off")


class InputError(ValueError):
    """Bad configuration or input files: reported as one line, before any heavy work starts."""


@dataclass(frozen=True)
class Config:
    backbones: tuple[str, ...] = ("xception", "inception_v3")
    image_size: int = 299  # side of the square each image is resized to
    flips: bool = True  # also train on, and predict, the horizontally flipped view
    n_folds: int = 5
    dropout: float = 0.5
    learning_rate: float = 1e-3
    max_epochs: int = 50
    patience: int = 5  # epochs without a better validation loss before a head stops
    head_batch_size: int = 128
    extract_batch_size: int = 0  # images per extraction batch; 0: from free GPU memory (64 without a GPU)
    precision: str = "auto"  # backbones' compute dtype; auto: float16 on T4-class GPUs, bfloat16 on newer, else float32
    xla: str = "auto"  # compile the extractor with XLA; auto: Keras' choice (on for one GPU, off on CPU or several)
    n_jobs: int = -1  # image-decoding threads (-1: one per core)
    seed: int = 2017
    dry_run: bool = False  # random-init backbones: no weight files, for CPU and CI
    weights_dataset: str = "gaborfodor/keras-pretrained-models"  # Kaggle dataset with the .h5 files

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
        min_size = max(BACKBONES[name].min_size for name in self.backbones)
        if self.image_size < min_size:
            raise InputError(f"config image_size={self.image_size}: expected at least {min_size} for these backbones")
        _check_at_least(self, "n_folds", 2)
        for name in ("max_epochs", "head_batch_size"):
            _check_at_least(self, name, 1)
        for name in ("patience", "extract_batch_size"):
            _check_at_least(self, name, 0)
        if self.precision not in PRECISIONS:
            raise InputError(f"config precision={self.precision!r}: expected one of {', '.join(PRECISIONS)}")
        if self.xla not in XLA_MODES:
            raise InputError(f"config xla={self.xla!r}: expected one of {', '.join(XLA_MODES)}")
        if not 0 <= self.dropout < 1:
            raise InputError(f"config dropout={self.dropout}: expected a value in [0, 1)")
        if not self.learning_rate > 0:
            raise InputError(f"config learning_rate={self.learning_rate}: expected a positive number")
        if self.n_jobs == 0 or self.n_jobs < -1:
            raise InputError(f"config n_jobs={self.n_jobs}: expected a positive count or -1 (all cores)")

    @property
    def views(self):
        """Names of the image views features are extracted for, in feature order."""
        return ("original", "flipped") if self.flips else ("original",)

    def as_dict(self):
        return dataclasses.asdict(self)


def make_config(**overrides):
    """A Config from the defaults and `overrides`; a dry run gets the small image size unless one is given."""
    if overrides.get("dry_run") and "image_size" not in overrides:
        overrides["image_size"] = DRY_RUN_IMAGE_SIZE
    return Config(**overrides)


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


def add_config_arguments(parser):
    """One command-line flag per Config field (--image-size, --flips/--no-flips, ...), defaulting to unset."""
    for field in dataclasses.fields(Config):
        flag = "--" + field.name.replace("_", "-")
        if field.type is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            parser.add_argument(
                flag,
                dest=field.name,
                metavar=field.name.upper(),
                type=lambda text, name=field.name: _parse_flag(name, text),
                default=None,
                help=f"default: {_default_text(field)}",
            )


def config_from_arguments(args, settings=None):
    """The Config that parsed flags ask for: the defaults, then `settings`, then each flag given."""
    names = [f.name for f in dataclasses.fields(Config)]
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    return make_config(**{**(settings or {}), **given})


def _parse_flag(name, text):
    try:
        return parse_value(name, text)
    except InputError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


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


def _default_text(field):
    return ",".join(field.default) if isinstance(field.default, tuple) else str(field.default)
'''

# ---- kaggle_src/backbones.py ----
SOURCES['kaggle_src.backbones'] = r'''
"""The pretrained backbones the features come from: what Keras calls them and where their weights are.

Pure data, no TensorFlow import, so that configuration and input checks stay instant.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Backbone:
    constructor: str  # attribute of keras.applications
    weights_file: str  # Keras' own file name for the ImageNet no-top weights
    min_size: int  # smallest input side the architecture accepts
    features: int  # width of its global-average-pooled output


BACKBONES = {
    "xception": Backbone("Xception", "xception_weights_tf_dim_ordering_tf_kernels_notop.h5", 71, 2048),
    "inception_v3": Backbone(
        "InceptionV3", "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5", 75, 2048
    ),
}
'''

# ---- kaggle_src/find_inputs.py ----
SOURCES['kaggle_src.find_inputs'] = r'''
"""Stage 1: find the competition files and the backbone weights under an input root, and read the tables.

Kaggle has changed how it nests /kaggle/input before, so nothing here hard-codes a path below the
root: the competition folder is whichever folder holds both CSVs, and each weights file is found by
its Keras file name.
"""
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .backbones import BACKBONES
from .config import InputError

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

    def image_paths(self, split):
        ids = self.train_ids if split == "train" else self.test_ids
        return [self.directory / split / f"{image_id}.jpg" for image_id in ids]


def default_input_root():
    return KAGGLE_INPUT if KAGGLE_INPUT.is_dir() else Path("input_stub")


def default_output_dir():
    return KAGGLE_WORKING if KAGGLE_WORKING.is_dir() else Path("working")


def find_inputs(input_root, config):
    """Return (competition folder, {backbone: weights file}) found under `input_root`.

    Dry runs use random-init backbones and need no weights files. A missing file is an
    InputError naming it and the dataset that holds it: nothing is ever downloaded.
    """
    input_root = Path(input_root)
    if not input_root.is_dir():
        raise InputError(f"input root {input_root}: not a folder")
    wanted = {BACKBONES[name].weights_file: name for name in config.backbones}
    competition_dirs, weights = [], {}
    for folder, subfolders, files in os.walk(input_root, followlinks=True):
        subfolders.sort()
        if LABELS_CSV in files and SAMPLE_SUBMISSION_CSV in files:
            competition_dirs.append(Path(folder))
            subfolders[:] = [name for name in subfolders if name not in ("train", "test")]
        for name in sorted(set(files) & wanted.keys()):
            weights.setdefault(wanted[name], Path(folder) / name)
    if not competition_dirs:
        raise InputError(
            f"input root {input_root}: no folder holds both {LABELS_CSV} and {SAMPLE_SUBMISSION_CSV}; "
            "attach the dog-breed-identification competition"
        )
    if config.dry_run:
        weights = {}
    else:
        for name in config.backbones:
            if name not in weights:
                raise InputError(
                    f"weights file {BACKBONES[name].weights_file} not found under {input_root}; "
                    f"attach the Kaggle dataset {config.weights_dataset} (or use --dry-run)"
                )
    return min(competition_dirs, key=lambda path: len(path.parts)), weights


def read_competition(directory):
    """Read labels.csv and sample_submission.csv and check that they agree."""
    directory = Path(directory)
    labels = _read_csv(directory / LABELS_CSV, required=("id", "breed"))
    sample = _read_csv(directory / SAMPLE_SUBMISSION_CSV, required=("id",))
    classes = list(sample.columns[1:])
    if sample.columns[0] != "id" or not classes:
        raise InputError(f"{directory / SAMPLE_SUBMISSION_CSV}: expected columns id, then one per breed")
    _check_unique(sample["id"], directory / SAMPLE_SUBMISSION_CSV)
    _check_unique(labels["id"], directory / LABELS_CSV)
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
    table["id"] = table["id"].str.strip()
    return table


def _check_unique(ids, path):
    duplicated = ids[ids.duplicated()]
    if not duplicated.empty:
        raise InputError(f"{path}: id {duplicated.iloc[0]!r} appears more than once")
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
from tqdm.auto import tqdm


def load_image(path, size):
    """One image as a (size, size, 3) uint8 RGB array, or None if it is missing or not decodable.

    Greyscale and alpha images become RGB.
    """
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        return None
    image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class LoadedImages:
    """`paths` decoded in order into `array` (n, size, size, 3) uint8 by `n_jobs` threads, in the background.

    Rows of images that could not be read stay zero; their indices are in `failed` once loading is done.
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
            progress = tqdm(done, total=len(self.paths), desc=f"load {self.desc}", unit="img", mininterval=2)
            for index, loaded in enumerate(progress):
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

    def result(self):
        """The whole array, once every image is loaded."""
        self._wait_for(len(self))
        return self.array


def load_images(paths, size, n_jobs=-1, desc="images"):
    """Start decoding `paths` into one uint8 RGB array behind a progress bar; returns LoadedImages at once."""
    return LoadedImages(paths, size, n_jobs, desc)
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
tf.data, so decoding overlaps the GPU's work; the batch size follows the free GPU memory, and an
out-of-memory error halves it instead of ending the run.
"""
import subprocess

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from .backbones import BACKBONES

CPU_BATCH_SIZE = 64  # images per batch without a GPU
MAX_BATCH_SIZE = 512  # images per replica at most, however much memory is free
MEMORY_FRACTION = 0.5  # of the free GPU memory that a batch's activations may take, by our estimate
LIVE_OUTPUTS = 4  # layer outputs alive at once in inference: input, output, a residual branch, workspace


def build_backbone(name, image_size, weights_path=None):
    """Backbone `name` without its top, average-pooled; ImageNet weights from a local legacy .h5 file.

    `weights_path=None` gives random-init weights (dry runs). Never downloads anything.
    """
    constructor = getattr(keras.applications, BACKBONES[name].constructor)
    return constructor(
        include_top=False,
        weights=None if weights_path is None else str(weights_path),
        input_shape=(image_size, image_size, 3),
        pooling="avg",
    )


def compute_dtype(precision):
    """The dtype the backbones compute in: `precision`, or for "auto" the fastest that the first GPU supports."""
    if precision != "auto":
        return precision
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "float32"
    capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))
    return "bfloat16" if capability >= (8, 0) else "float16" if capability >= (7, 0) else "float32"


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
            backbones = [build_backbone(name, config.image_size, (weights or {}).get(name)) for name in config.backbones]
            extractor = fuse_views(backbones, config.image_size, config.flips)
            extractor.compile(jit_compile={"auto": "auto", "on": True, "off": False}[config.xla])
    finally:
        keras.config.set_dtype_policy(previous_policy)
    print(f"extractor: {', '.join(config.backbones)} at {config.image_size}px in {dtype} on "
          f"{strategy.num_replicas_in_sync} replica(s), XLA {'on' if extractor.jit_compile else 'off'}")
    return extractor


def fuse_views(backbones, image_size, flips=True):
    """The extractor model around already built `backbones`: scaling, flipping and concatenation on the device."""
    images = keras.Input((image_size, image_size, 3), dtype="uint8", name="images")
    scaled = ops.cast(images, backbones[0].compute_dtype) / 127.5 - 1.0
    views = [scaled, ops.flip(scaled, axis=2)] if flips else [scaled]
    stacked = ops.concatenate(views, axis=0)  # (views * batch, ...): one backbone call per batch
    features = ops.concatenate([ops.cast(backbone(stacked), "float32") for backbone in backbones], axis=-1)
    per_view = ops.stack(ops.split(features, len(views), axis=0), axis=1)
    return keras.Model(images, per_view, name="extractor")


def free_gpu_memory():
    """Free bytes on the first GPU as nvidia-smi reports them, or None without a GPU or nvidia-smi."""
    if not tf.config.list_physical_devices("GPU"):
        return None
    try:
        output = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.free", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout
        return int(output.split()[0]) * 2**20
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


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


def choose_batch_size(extractor, free_bytes, replicas):
    """Images per batch: the largest power of two per replica whose activations fit in MEMORY_FRACTION of
    `free_bytes` (at most MAX_BATCH_SIZE), times `replicas`; CPU_BATCH_SIZE when the free memory is unknown."""
    if free_bytes is None:
        return CPU_BATCH_SIZE
    per_replica = max(1, int(free_bytes * MEMORY_FRACTION) // activation_bytes(extractor))
    per_replica = min(MAX_BATCH_SIZE, 2 ** int(np.log2(per_replica)))
    return per_replica * replicas


def extract_features(extractor, images, batch_size=0):
    """Run the extractor over LoadedImages; returns float32 (n_images, views, features).

    Batches stream in from the loader as they are decoded. `batch_size` 0 chooses it from the free GPU
    memory; out of memory, the batch is halved and the split started again.
    """
    replicas = extractor.distribute_strategy.num_replicas_in_sync
    batch_size = batch_size or choose_batch_size(extractor, free_gpu_memory(), replicas)
    while True:
        try:
            return _predict(extractor, images, batch_size)
        except tf.errors.ResourceExhaustedError:
            if batch_size <= 1:
                raise
            batch_size = max(1, batch_size // 2)
            print(f"out of GPU memory: extracting again with {batch_size} images per batch")


def _predict(extractor, images, batch_size):
    size = extractor.input_shape[1]
    dataset = tf.data.Dataset.from_generator(
        lambda: images.batches(batch_size),
        output_signature=tf.TensorSpec((None, size, size, 3), tf.uint8),
    ).apply(tf.data.experimental.assert_cardinality(-(-len(images) // batch_size))).prefetch(2)
    print(f"extract {images.desc}: {len(images)} images, {batch_size} per batch")
    features = extractor.predict(dataset, verbose=0)
    return np.asarray(features, np.float32)
'''

# ---- kaggle_src/train_heads.py ----
SOURCES['kaggle_src.train_heads'] = r'''
"""Stage 4: stratified K-fold CV of dropout + softmax heads, one per fold and view, with out-of-fold scores.

All heads train together, as one Keras model: a layer holding every head's weights applies each
head to its own view with one batched matmul, and each head's loss counts only its own training
rows. Adam's updates are per weight, so the heads stay independent, as in the seed's ten
sequential fits, but share one pass over the data and one compiled step instead of ten. Each head
stops early on its own validation loss and keeps its best epoch's weights.

Each head standardises its inputs with its training fold's mean and standard deviation. With
ImageNet features this changes little; with the tiny-scale features of random-init backbones in
dry runs, it is what lets a head learn at all.
"""
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import StratifiedKFold


@dataclass
class TrainedHead:
    """One trained head: softmax(((x - mean) * scale) @ kernel + bias) on its view's features."""

    fold: int
    view: int  # index into the features' view axis
    mean: np.ndarray  # (features,)
    scale: np.ndarray  # (features,) 1 / standard deviation
    kernel: np.ndarray  # (features, classes)
    bias: np.ndarray  # (classes,)
    epochs: int = 0  # epochs run before it stopped early
    val_log_loss: float = float("nan")
    val_accuracy: float = float("nan")

    def predict(self, features):
        """Class probabilities (n, classes) for features (n, d) of this head's view."""
        logits = ((features - self.mean) * self.scale) @ self.kernel + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        return probabilities / probabilities.sum(axis=1, keepdims=True)


def make_folds(labels, n_folds, seed):
    """Stratified, shuffled, reproducible (train_index, validation_index) pairs."""
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros((len(labels), 1)), labels))


class StackedHeads(keras.layers.Layer):
    """Every head in one layer: head h standardises view views[h], drops out, and applies its own dense layer."""

    def __init__(self, views, mean, scale, n_classes, dropout, seed):
        super().__init__()
        self.views = np.asarray(views)
        self.mean, self.scale = ops.convert_to_tensor(mean), ops.convert_to_tensor(scale)
        self.dropout = keras.layers.Dropout(dropout, seed=seed)
        n_heads, n_features = mean.shape
        limit = np.sqrt(6.0 / (n_features + n_classes))  # Glorot-uniform of each head's own Dense layer
        self.kernel = self.add_weight(
            shape=(n_heads, n_features, n_classes),
            initializer=keras.initializers.RandomUniform(-limit, limit, seed=seed),
            name="kernel",
        )
        self.bias = self.add_weight(shape=(n_heads, n_classes), initializer="zeros", name="bias")

    def call(self, features, training=False):
        x = (ops.take(features, self.views, axis=1) - self.mean) * self.scale  # (batch, heads, features)
        x = self.dropout(x, training=training)
        return ops.einsum("bhd,hdc->bhc", x, self.kernel) + self.bias  # logits (batch, heads, classes)


def per_head_crossentropy(targets, logits):
    """Sum over heads of each head's mean cross-entropy on its own training rows (target -1: not one of them)."""
    mask = ops.cast(targets >= 0, logits.dtype)
    labels = ops.cast(ops.maximum(targets, 0), "int32")
    losses = ops.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    return ops.sum(ops.sum(losses * mask, axis=0) / ops.maximum(ops.sum(mask, axis=0), 1.0))


class PerHeadEarlyStopping(keras.callbacks.Callback):
    """Early stopping and best-weight restoring for each head on its own validation rows."""

    def __init__(self, layer, heads, features, labels, validation_rows, patience):
        super().__init__()
        self.layer, self.heads, self.features, self.labels = layer, heads, features, labels
        self.validation_rows, self.patience = validation_rows, patience
        self.best_loss = np.full(len(heads), np.inf)
        self.best_epoch = np.zeros(len(heads), int)

    def on_epoch_end(self, epoch, logs=None):
        kernel, bias = ops.convert_to_numpy(self.layer.kernel), ops.convert_to_numpy(self.layer.bias)
        for index, (head, rows) in enumerate(zip(self.heads, self.validation_rows)):
            if head.epochs:  # stopped already
                continue
            candidate = TrainedHead(head.fold, head.view, head.mean, head.scale, kernel[index], bias[index])
            probabilities = candidate.predict(self.features[rows, head.view])
            loss = -np.mean(np.log(np.maximum(probabilities[np.arange(len(rows)), self.labels[rows]], 1e-15)))
            if loss < self.best_loss[index]:
                self.best_loss[index], self.best_epoch[index] = loss, epoch
                head.kernel, head.bias = kernel[index].copy(), bias[index].copy()
            elif epoch - self.best_epoch[index] >= self.patience:
                head.epochs = epoch + 1
        if all(head.epochs for head in self.heads):
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        for head in self.heads:
            head.epochs = head.epochs or self.params["epochs"]


def train_heads(features, labels, n_classes, config):
    """Train one head per (fold, view) on `features` (n, views, d); return (heads, out-of-fold (views, n, classes))."""
    features = np.asarray(features, np.float32)
    n_samples, n_views, n_features = features.shape
    folds = make_folds(labels, config.n_folds, config.seed)
    heads, targets = [], np.full((n_samples, len(folds) * n_views), -1, np.int32)
    for fold, (train_index, _) in enumerate(folds):
        for view in range(n_views):
            targets[train_index, len(heads)] = labels[train_index]
            train = features[train_index, view]
            std = train.std(axis=0)
            scale = (1 / np.where(std > 0, std, 1)).astype(np.float32)  # a constant feature stays 0
            heads.append(TrainedHead(fold, view, train.mean(axis=0), scale, kernel=None, bias=None))

    keras.utils.set_random_seed(config.seed)
    inputs = keras.Input((n_views, n_features))
    layer = StackedHeads(
        [head.view for head in heads],
        np.stack([head.mean for head in heads]),
        np.stack([head.scale for head in heads]),
        n_classes,
        config.dropout,
        config.seed,
    )
    model = keras.Model(inputs, layer(inputs))
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=per_head_crossentropy)
    stopping = PerHeadEarlyStopping(layer, heads, features, labels, [folds[head.fold][1] for head in heads], config.patience)
    model.fit(
        features, targets, batch_size=config.head_batch_size, epochs=config.max_epochs, callbacks=[stopping], verbose=0
    )

    oof = np.zeros((n_views, n_samples, n_classes), np.float32)
    for head in heads:
        rows = folds[head.fold][1]
        oof[head.view, rows] = head.predict(features[rows, head.view])
        score = score_predictions(oof[head.view, rows], labels[rows], n_classes)
        head.val_log_loss, head.val_accuracy = score["log_loss"], score["accuracy"]
        print(
            f"fold {head.fold} view {head.view}: {head.epochs} epochs, "
            f"val log loss {head.val_log_loss:.4f}, accuracy {head.val_accuracy:.4f}"
        )
    return heads, oof


def score_predictions(probabilities, labels, n_classes):
    """Multi-class log loss (as Kaggle scores it) and accuracy."""
    probabilities = np.clip(np.asarray(probabilities, np.float64), 1e-15, 1 - 1e-15)
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
    return {
        "log_loss": float(log_loss(labels, probabilities, labels=np.arange(n_classes))),
        "accuracy": float(accuracy_score(labels, probabilities.argmax(axis=1))),
    }
'''

# ---- kaggle_src/predict.py ----
SOURCES['kaggle_src.predict'] = r'''
"""Stage 5: the test predictions, the mean of every head's prediction on its own view's features."""
import numpy as np


def predict_test(heads, test_features):
    """Mean over `heads` of each head's softmax on `test_features[:, head.view]`; (n_test, classes)."""
    return np.mean([head.predict(test_features[:, head.view]) for head in heads], axis=0, dtype=np.float64)
'''

# ---- kaggle_src/write_outputs.py ----
SOURCES['kaggle_src.write_outputs'] = r'''
"""Stage 6: submission.csv, checked against sample_submission.csv before it is written, and metrics.json.

Both files are written to a temporary name and renamed into place, so a failed run never leaves a
half-written file nor replaces a good submission with a bad one.
"""
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd


class SubmissionError(ValueError):
    """A submission that Kaggle would reject or score wrongly."""


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
    _write_atomically(path, lambda temporary: submission.to_csv(temporary, index=False, float_format="%.7g"))


def write_metrics(metrics, path):
    """Write the metrics dict as indented JSON, atomically."""
    _write_atomically(path, lambda temporary: Path(temporary).write_text(json.dumps(metrics, indent=2) + "\n"))


def _write_atomically(path, write):
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
'''

# ---- kaggle_src/pipeline.py ----
SOURCES['kaggle_src.pipeline'] = r'''
"""The whole run, stage by stage: inputs -> images -> features -> heads -> predictions -> files.

    python -m kaggle_src                                   # on Kaggle: /kaggle/input -> /kaggle/working
    python -m kaggle_src --input-root input_stub --output-dir working --dry-run
"""
import argparse
import math
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import keras
import numpy as np

from .config import InputError, add_config_arguments, config_from_arguments
from .extract_features import build_extractor, extract_features
from .find_inputs import default_input_root, default_output_dir, find_inputs, prepare_output_dir, read_competition
from .load_images import load_images
from .predict import predict_test
from .train_heads import score_predictions, train_heads
from .write_outputs import SubmissionError, make_submission, write_metrics, write_submission


def run(config, input_root, output_dir, build=None):
    """Run the pipeline with `config`; write submission.csv and metrics.json to `output_dir`; return the metrics.

    `build`, when the run is a built kernel, says what it was built from; metrics.json keeps it.
    """
    seconds, started = defaultdict(float), time.perf_counter()

    @contextmanager
    def stage(name):
        start = time.perf_counter()
        yield
        seconds[name] += time.perf_counter() - start

    # 1. Find the inputs: every check that can fail fast runs before any heavy work.
    with stage("find_inputs"):
        competition_dir, weights = find_inputs(input_root, config)
        competition = read_competition(competition_dir)
        output_dir = prepare_output_dir(output_dir)
    n_classes = len(competition.classes)
    print(
        f"{competition_dir}: {len(competition.train_ids)} train, {len(competition.test_ids)} test images, "
        f"{n_classes} classes; backbones {', '.join(config.backbones)} at {config.image_size}px"
        + (" (dry run: random-init weights)" if config.dry_run else "")
    )

    # 2-3. Load each split as uint8 in background threads and extract its features batch by batch as
    # the images come in, with one extractor, built once (random-init backbones differ on every build).
    keras.utils.set_random_seed(config.seed)
    with stage("extract_features"):
        extractor = build_extractor(config, weights)
    features = {}
    for split in ("train", "test"):
        with stage("extract_features"):  # loading runs behind it: see seconds.load_images for its own time
            images = load_images(competition.image_paths(split), config.image_size, config.n_jobs, desc=split)
            features[split] = extract_features(extractor, images, config.extract_batch_size)
        seconds["load_images"] += images.seconds
        if images.failed:
            raise InputError(f"{images.paths[images.failed[0]]}: missing or not a decodable image")
        del images

    # 4. Train one head per fold and view; keep the out-of-fold predictions.
    with stage("train_heads"):
        heads, oof = train_heads(features["train"], competition.train_labels, n_classes, config)

    # 5. Predict the test set: the mean of every head on its own view.
    with stage("predict"):
        test_probabilities = predict_test(heads, features["test"])

    # 6. Write the validated submission and the metrics.
    with stage("write"):
        submission = make_submission(competition.test_ids, competition.classes, test_probabilities)
        write_submission(submission, competition.test_ids, competition.classes, output_dir / "submission.csv")
    metrics = cv_metrics(heads, oof, competition.train_labels, config.views)
    metrics["counts"] = {
        "train_images": len(competition.train_ids),
        "test_images": len(competition.test_ids),
        "classes": n_classes,
        "folds": config.n_folds,
        "views": len(config.views),
        "heads": len(heads),
        "features": int(features["train"].shape[-1]),
    }
    metrics["chance_log_loss"] = math.log(n_classes)
    metrics["seconds"] = {name: round(value, 2) for name, value in seconds.items()}
    metrics["seconds"]["total"] = round(time.perf_counter() - started, 2)  # stages overlap: not their sum
    metrics["config"] = config.as_dict()
    if build is not None:
        metrics["build"] = build
    write_metrics(metrics, output_dir / "metrics.json")
    return metrics


def cv_metrics(heads, oof, labels, views):
    """Out-of-fold scores per head, per view's ensemble and for all heads together (the seed's score propagation)."""
    n_classes = oof.shape[-1]
    per_view = {name: score_predictions(oof[index], labels, n_classes) for index, name in enumerate(views)}
    return {
        "oof": {**per_view, "ensemble": score_predictions(oof.mean(axis=0), labels, n_classes)},
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
    }


def main(argv=None, settings=None, build=None):
    """Command-line entry: parse flags (ignoring unknown ones, as Kaggle may add some), run, report.

    `settings` are Config values baked in by build_kernel.py; flags given on the command line win.
    """
    parser = argparse.ArgumentParser(prog="kaggle_src", description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--input-root", type=Path, default=None, help="default: /kaggle/input if it exists, else input_stub")
    parser.add_argument("--output-dir", type=Path, default=None, help="default: /kaggle/working if it exists, else working")
    add_config_arguments(parser)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        print(f"ignoring unknown arguments: {' '.join(unknown)}")
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
    oof = metrics["oof"]
    print(
        "out-of-fold log loss: "
        + ", ".join(f"{name} {scores['log_loss']:.4f}" for name, scores in oof.items())
        + f" (chance {metrics['chance_log_loss']:.4f}); {metrics['seconds']['total']:.0f} s"
    )
    print(f"wrote {output_dir}/submission.csv and metrics.json")
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
