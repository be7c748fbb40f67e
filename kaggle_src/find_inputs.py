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
