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
