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
