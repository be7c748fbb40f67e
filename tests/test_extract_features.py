import json
import subprocess
import sys
import threading

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from kaggle_src.backbones import BACKBONES
from kaggle_src.config import InputError, make_config
from kaggle_src.extract_features import (
    CPU_BATCH_SIZE, MAX_BATCH_SIZE, activation_bytes, build_backbone, build_extractor, check_accelerator,
    choose_batch_size, estimate_seconds, extract_features, fuse_views, preprocess,
)
from kaggle_src.find_inputs import find_inputs
from kaggle_src.load_images import LoadedImages
from tests.conftest import INPUT_STUB, REPO
from tools.real_weights import write_legacy_weights

SIZE = 75  # InceptionV3's smallest input: the cheapest size both backbones accept


@pytest.fixture(scope="module")
def backbones():
    keras.utils.set_random_seed(0)
    return {name: build_backbone(name, SIZE) for name in ("xception", "inception_v3")}


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (5, SIZE, SIZE, 3), dtype=np.uint8)


def loaded(images, folder):
    """`images` (RGB) written losslessly and loaded back through the real loader, as the pipeline feeds them."""
    folder.mkdir(exist_ok=True)
    paths = [folder / f"{index}.png" for index in range(len(images))]
    for path, image in zip(paths, images):
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    result = LoadedImages(paths, images.shape[1], n_jobs=2)
    assert (next(result.batches(len(paths))) == images).all()
    return result


def separately(backbones, images):
    """The seed's way: host preprocessing and np.flip copies, each backbone run on its own."""
    scaled = images.astype(np.float32) / 127.5 - 1
    views = [scaled, np.flip(scaled, axis=2)]
    return np.stack(
        [np.concatenate([backbone.predict(view, verbose=0) for backbone in backbones.values()], axis=-1) for view in views],
        axis=1,
    )


@pytest.fixture(scope="module")
def expected(backbones, images):
    """`images`' features the seed's way, once for every test that holds the fused extractor to them."""
    return separately(backbones, images)


def close_to(actual, expected, relative):
    np.testing.assert_allclose(actual, expected, rtol=0, atol=relative * np.abs(expected).max())


def test_fused_extractor_equals_each_backbone_on_each_view_and_lets_the_images_go(
    backbones, images, expected, tmp_path
):
    """Also: tf.data keeps a generator's function for the life of the process; the images must not stay reachable
    through it, or the training split's array (6.2 GB at 448 px) would still be held while the test split loads."""
    import weakref

    split = loaded(images, tmp_path)
    array = weakref.ref(split.array)
    fused = extract_features(fuse_views(backbones, SIZE, flips=True), split, batch_size=2)[0]
    del split
    assert array() is None
    assert fused.shape == (5, 2, 4096) and fused.dtype == np.float32
    assert not np.allclose(expected[:, 0], expected[:, 1], rtol=1e-3, atol=0)  # the views do differ
    close_to(fused, expected, 1e-4)


def test_without_flips_there_is_one_view(backbones, images, expected, tmp_path):
    features = extract_features(fuse_views(backbones, SIZE, flips=False), loaded(images, tmp_path), batch_size=4)[0]
    close_to(features, expected[:, :1], 1e-4)


@pytest.fixture(scope="module")
def full_precision(images, tmp_path_factory):
    """The float32 extractor built after seed 0, and its features of `images`: what each half precision is held to."""
    keras.utils.set_random_seed(0)
    extractor = build_extractor(make_config(dry_run=True, image_size=SIZE, precision="float32"))
    features = extract_features(extractor, loaded(images, tmp_path_factory.mktemp("full_precision")), batch_size=5)[0]
    return extractor, features


@pytest.mark.parametrize("precision, tolerance", [("float16", 0.01), ("bfloat16", 0.05)])
def test_half_precision_features_are_float32_and_close_to_full_precision(
    full_precision, images, tmp_path, precision, tolerance
):
    """The GPU's float16 / bfloat16 path, run on the CPU: same weights, features within a tolerance."""
    full, expected = full_precision
    keras.utils.set_random_seed(0)
    half = build_extractor(make_config(dry_run=True, image_size=SIZE, precision=precision))
    assert [layer.compute_dtype for layer in half.layers if isinstance(layer, keras.Model)] == [precision] * 2
    for ours, theirs in zip(half.weights, full.weights):  # variables stay float32 under mixed precision
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(ours), keras.ops.convert_to_numpy(theirs))
    features = extract_features(half, loaded(images, tmp_path), batch_size=5)[0]
    assert features.dtype == np.float32
    assert not np.array_equal(features, expected)  # it did compute in lower precision
    close_to(features, expected, tolerance)


def test_xla_compiled_extractor_equals_the_uncompiled_one(images, tmp_path):
    """The GPU's XLA path, compiled and run on the CPU (a small backbone, to keep the compile short)."""
    features = {}
    for xla in ("off", "on"):
        keras.utils.set_random_seed(0)
        extractor = build_extractor(make_config(dry_run=True, backbones=("mobilenet_v2",), image_size=SIZE, xla=xla))
        assert extractor.jit_compile is (xla == "on")
        features[xla] = extract_features(extractor, loaded(images, tmp_path), batch_size=5)[0]
    assert features["on"].shape == (5, 2, 1280)
    close_to(features["on"], features["off"], 1e-4)


@pytest.mark.parametrize("module, mode", [("xception", "tf"), ("resnet50", "caffe"), ("densenet", "torch"),
                                          ("efficientnet_v2", "raw")])
def test_preprocessing_matches_keras_applications(module, mode):
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    expected = getattr(keras.applications, module).preprocess_input(pixels.copy())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(preprocess(pixels, mode)), expected, rtol=1e-5, atol=1e-4)


def test_each_backbone_runs_at_its_own_size_from_one_load(tmp_path):
    """Xception (native 299) and MobileNetV2 (native 224) from one 96 px load: Xception at 96, MobileNetV2 at 72."""
    images = np.random.default_rng(1).integers(0, 256, (3, 96, 96, 3), dtype=np.uint8)
    config = make_config(dry_run=True, backbones=("xception", "mobilenet_v2"), flips=False)
    assert config.input_sizes == {"xception": 96, "mobilenet_v2": 72}
    extractor = build_extractor(config)
    xception, mobilenet = [layer for layer in extractor.layers if isinstance(layer, keras.Model)]
    assert (xception.input_shape[1], mobilenet.input_shape[1]) == (96, 72)
    features = extract_features(extractor, loaded(images, tmp_path), batch_size=2)[0]
    pixels = images.astype(np.float32)
    small = keras.ops.convert_to_numpy(keras.ops.image.resize(pixels, (72, 72), antialias=True))
    expected = np.concatenate([
        xception.predict(keras.applications.xception.preprocess_input(pixels.copy()), verbose=0),
        mobilenet.predict(keras.applications.mobilenet_v2.preprocess_input(small), verbose=0),
    ], axis=-1)
    assert features.shape == (3, 1, 2048 + 1280)
    close_to(features[:, 0], expected, 1e-4)


def test_auto_precision_and_xla_are_float32_and_off_on_cpu():
    extractor = build_extractor(make_config(dry_run=True, image_size=SIZE, backbones=("inception_v3",)))
    assert extractor.layers[-1].compute_dtype == "float32" and extractor.jit_compile is False


MULTI_REPLICA = """
import json, sys
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from kaggle_src.config import make_config
from kaggle_src.extract_features import build_extractor, extract_features
from tests.test_extract_features import loaded
from pathlib import Path
images = np.random.default_rng(0).integers(0, 256, (7, 75, 75, 3), dtype=np.uint8)
config = make_config(dry_run=True, image_size=75, backbones=("mobilenet_v2",))
single = build_extractor(config)
mirrored = build_extractor(config, devices=["/cpu:0", "/cpu:1"])
mirrored.set_weights(single.get_weights())
one = extract_features(single, loaded(images, Path(sys.argv[1]) / "a"), batch_size=4)[0]
two = extract_features(mirrored, loaded(images, Path(sys.argv[1]) / "b"), batch_size=4)[0]  # batches of 4 then 3
print(json.dumps({"replicas": mirrored.distribute_strategy.num_replicas_in_sync, "shape": two.shape,
                  "difference": float(np.abs(one - two).max() / np.abs(one).max())}))
"""


def test_batches_split_across_replicas_equal_one_device(tmp_path):
    """Kaggle's T4 x2 path (a MirroredStrategy), on two logical CPU devices in a fresh process (a small backbone, to
    keep the two builds short: the split does not depend on the backbones)."""
    result = subprocess.run([sys.executable, "-c", MULTI_REPLICA, str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2 and report["shape"] == [7, 2, 1280]
    assert report["difference"] < 1e-5


def test_out_of_memory_halves_the_batch_and_starts_again(backbones, images, expected, tmp_path, capsys):
    extractor = fuse_views(backbones, SIZE)
    predict, batch_sizes = extractor.predict, []

    def predict_with_little_memory(dataset, **kwargs):
        sizes = [len(batch) for batch in dataset]
        batch_sizes.append(sizes[0])
        if sizes[0] > 1:
            raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")
        return predict(dataset, **kwargs)

    extractor.predict = predict_with_little_memory
    features = extract_features(extractor, loaded(images, tmp_path), batch_size=4)[0]
    assert batch_sizes == [4, 2, 1]
    assert "out of GPU memory: extracting again with 1 images per batch" in capsys.readouterr().out
    close_to(features, expected, 1e-4)


def test_batch_size_fits_a_t4_for_the_backbones_and_size_whatever_memory_reads_free(monkeypatch):
    """No reading of free memory: TensorFlow keeps what it took, so nvidia-smi's free memory says who ran first."""
    monkeypatch.setattr(subprocess, "run", lambda *args, **kwargs: pytest.fail("nothing is asked of nvidia-smi"))
    extractor = fuse_views({name: build_backbone(name, 299) for name in ("xception", "inception_v3")}, 299)
    per_image = activation_bytes(extractor)
    # The largest layer output at 299 px is Xception's 147x147x128 float32, 4 alive at once, 2 views.
    assert per_image == 2 * 4 * 147 * 147 * 128 * 4
    assert choose_batch_size(extractor, on_gpu=True) == 32  # 4 GiB / 88 MB = 48, rounded down to a power of two
    assert choose_batch_size(extractor, on_gpu=False) == 32  # the same budget in RAM (64 images were killed at 576 px)
    small = fuse_views({"xception": build_backbone("xception", 71)}, 71, flips=False)
    assert choose_batch_size(small, on_gpu=True) == MAX_BATCH_SIZE
    assert choose_batch_size(small, on_gpu=False) == CPU_BATCH_SIZE


def test_every_batch_has_one_shape_the_last_padded_and_never_more_than_the_split(backbones, images, expected,
                                                                                 tmp_path):
    """One shape, one trace of the model (with XLA, one compile): a last batch of its own shape cost 20 to 45 s."""
    extractor = fuse_views(backbones, SIZE)
    predict, shapes = extractor.predict, []

    def recording(dataset, **kwargs):
        shapes.append([batch.shape[0] for batch in dataset])
        return predict(dataset, **kwargs)

    extractor.predict = recording
    features, batch_size = extract_features(extractor, loaded(images, tmp_path), batch_size=2)
    assert shapes == [[2, 2, 2]] and batch_size == 2  # 5 images: the last batch of 1 padded to 2
    close_to(features, expected, 1e-4)  # and the padding's rows dropped
    features, batch_size = extract_features(extractor, loaded(images, tmp_path), batch_size=64)
    assert shapes[-1] == [5] and batch_size == 5  # a split smaller than the batch is not padded up to it
    close_to(features, expected, 1e-4)


def test_a_split_that_cannot_fit_in_memory_stops_in_one_line(backbones, images, tmp_path, monkeypatch):
    monkeypatch.setattr("kaggle_src.extract_features.available_memory", lambda: 2**20)  # 1 MiB available
    with pytest.raises(InputError, match=r"^config image_size=75: the 5 images images need about 0\.\d GiB of RAM "
                                         r"at this size .*, and 0\.0 GiB is available: lower --image-size or "
                                         r"--extract-batch-size$"):
        extract_features(fuse_views(backbones, SIZE), loaded(images, tmp_path), batch_size=2)


def test_extraction_starts_before_loading_ends(tmp_path, monkeypatch, images):
    """The first batch reaches the extractor while the last image is still being decoded."""
    import kaggle_src.load_images as module

    first_batch_taken, decode = threading.Event(), module.load_image
    late = str(tmp_path / "4.png")

    def slow_last_image(path, size):
        if str(path) == late:
            assert first_batch_taken.wait(timeout=60), "the first batch was not handed out before loading ended"
        return decode(path, size)

    monkeypatch.setattr(module, "load_image", slow_last_image)
    for index, image in enumerate(images):
        cv2.imwrite(str(tmp_path / f"{index}.png"), image)
    loading = LoadedImages([tmp_path / f"{index}.png" for index in range(5)], SIZE, n_jobs=2)
    batches = loading.batches(2)
    next(batches)
    first_batch_taken.set()
    assert sum(len(batch) for batch in batches) == 3
    assert loading.failed == []


def test_weights_load_from_legacy_h5_files_with_the_keras_names(tmp_path, backbones):
    (tmp_path / "keras-pretrained-models").mkdir()
    (tmp_path / "dog-breed-identification").symlink_to(INPUT_STUB / "dog-breed-identification")
    for name, backbone in backbones.items():
        write_legacy_weights(backbone, tmp_path / "keras-pretrained-models" / BACKBONES[name].weights_file)
    _, weights = find_inputs(tmp_path, make_config(image_size=SIZE))
    for name, backbone in backbones.items():
        loaded_backbone = build_backbone(name, SIZE, weights[name])
        assert len(loaded_backbone.weights) == len(backbone.weights)
        for theirs, ours in zip(loaded_backbone.weights, backbone.weights):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(theirs), keras.ops.convert_to_numpy(ours))


@pytest.mark.parametrize("damage", ["truncated", "with its top", "another backbone's"])
def test_weights_that_will_not_load_stop_with_one_line_naming_the_file(damage, backbones, tmp_path):
    path = tmp_path / BACKBONES["xception"].weights_file
    if damage == "truncated":
        write_legacy_weights(backbones["xception"], path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        said = "truncated file"
    elif damage == "with its top":
        write_legacy_weights(keras.applications.Xception(weights=None, input_shape=(SIZE, SIZE, 3)), path)
        said = "Layer count mismatch"
    else:
        write_legacy_weights(backbones["inception_v3"], path)
        said = "Layer count mismatch"
    with pytest.raises(InputError) as stop:
        build_backbone("xception", SIZE, path)
    message = str(stop.value)
    assert message.startswith(f"{path}: not Xception's no-top ImageNet weights "
                              "(xception_weights_tf_dim_ordering_tf_kernels_notop.h5); Keras said: ")
    assert said in message and "\n" not in message


def test_a_gpu_less_run_is_stopped_on_kaggle_and_timed_elsewhere(backbones, images):
    real = make_config(image_size=SIZE)
    with pytest.raises(InputError, match="no GPU in this Kaggle session: turn the accelerator on"):
        check_accelerator(real, kaggle=True)
    assert check_accelerator(real, kaggle=False)  # this machine has no GPU: worth a warning
    assert not check_accelerator(make_config(dry_run=True), kaggle=True)  # dry runs are meant for CPUs
    extractor = fuse_views(backbones, SIZE)
    assert 0 < estimate_seconds(extractor, 4, batch=4) < estimate_seconds(extractor, 4000, batch=4)
