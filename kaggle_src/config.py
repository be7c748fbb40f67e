"""Every setting of a run in one place, with the seed's values as defaults, checked at the door."""
import argparse
import dataclasses
import sys
from dataclasses import dataclass

from tqdm import tqdm

from .backbones import BACKBONES

DRY_RUN_IMAGE_SIZE = 96  # what --dry-run uses unless --image-size is given
PRECISIONS = ("auto", "float32", "float16", "bfloat16")
XLA_MODES = ("auto", "on", "off")


class InputError(ValueError):
    """Bad configuration or input files: reported as one line, before any heavy work starts."""


def warn(message):
    """Report a problem the run survives: one line on stderr, on a line of its own even while a progress bar runs."""
    tqdm.write(f"warning: {message}", file=sys.stderr)


@dataclass(frozen=True)
class Config:
    backbones: tuple[str, ...] = ("xception", "inception_v3")
    image_size: int = 299  # side images are loaded at; the backbone with the largest native size runs at it
    flips: bool = True  # also train on, and predict, the horizontally flipped view
    n_folds: int = 5
    dropout: float = 0.5
    learning_rate: float = 1e-3
    max_epochs: int = 50
    patience: int = 5  # epochs without a better validation loss before a head stops
    standardise: bool = False  # heads centre and scale each feature by their fold's statistics (on for --dry-run)
    logistic: bool = True  # also fit a logistic regression per fold (CPU: 2-8 min at full size), an ensembling option
    head_batch_size: int = 128
    extract_batch_size: int = 0  # images per extraction batch; 0: from free GPU memory (64 without a GPU)
    precision: str = "auto"  # backbones' compute dtype; auto: float16 on T4-class GPUs, bfloat16 on newer, else float32
    xla: str = "auto"  # compile the extractor with XLA; auto: Keras' choice (on for one GPU, off on CPU or several)
    n_jobs: int = -1  # image-decoding threads (-1: one per core)
    seed: int = 2017
    dry_run: bool = False  # random-init backbones: no weight files, for CPU and CI
    features: str = ""  # a folder to search for cached features (features_manifest.json) instead of extracting
    weights_dataset: str = ""  # Kaggle dataset with every backbone's .h5 file ("": each backbone's known one)

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
    """A Config from the defaults and `overrides`. Unless given, the image size is the backbones' largest
    native size, and `standardise` is off, as in the seed. A dry run defaults to the small dry-run size and to
    standardised heads: random-init backbones give features that are nearly constant per column, which a
    head cannot learn from unless each column is centred and scaled."""
    if overrides.get("dry_run"):
        overrides = {"image_size": DRY_RUN_IMAGE_SIZE, "standardise": True, **overrides}
    if "image_size" in overrides:
        return Config(**overrides)
    config = Config(**overrides)
    return dataclasses.replace(config, image_size=config.native_size)


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
