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
