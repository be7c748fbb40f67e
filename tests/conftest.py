"""Shared fixtures: the committed stub, a small generated variant, and one end-to-end dry run."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from make_stub import make_stub  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
INPUT_STUB = REPO / "input_stub"


def write_legacy_weights(model, path):
    """Write `model`'s weights in the legacy Keras .h5 layout of the published ImageNet files."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, model)


@pytest.fixture(scope="session")
def small_stub(tmp_path_factory):
    """A 10-breed stub (6 train, 2 test images per breed): the input root that holds it."""
    root = tmp_path_factory.mktemp("small_stub")
    make_stub(root, classes=10, train_per_class=6, test_per_class=2, seed=1)
    return root


@pytest.fixture(scope="session")
def dry_run(tmp_path_factory):
    """The committed input_stub through `python -m kaggle_src --dry-run`'s entry, once per session."""
    from kaggle_src.pipeline import main

    output_dir = tmp_path_factory.mktemp("dry_run")
    assert main(["--input-root", str(INPUT_STUB), "--output-dir", str(output_dir), "--dry-run"]) == 0
    return output_dir
