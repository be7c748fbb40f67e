import keras
import numpy as np
import pytest

from kaggle_src.backbones import BACKBONES
from kaggle_src.config import make_config
from kaggle_src.extract_features import build_backbone, build_extractor, extract_features
from kaggle_src.find_inputs import find_inputs
from tests.conftest import INPUT_STUB, write_legacy_weights

SIZE = 75  # InceptionV3's smallest input: the cheapest size both backbones accept


@pytest.fixture(scope="module")
def backbones():
    keras.utils.set_random_seed(0)
    return [build_backbone(name, SIZE) for name in ("xception", "inception_v3")]


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (5, SIZE, SIZE, 3), dtype=np.uint8)


def separately(backbones, images):
    """The seed's way: host preprocessing and np.flip copies, each backbone run on its own."""
    scaled = images.astype(np.float32) / 127.5 - 1
    views = [scaled, np.flip(scaled, axis=2)]
    return np.stack(
        [np.concatenate([backbone.predict(view, verbose=0) for backbone in backbones], axis=-1) for view in views],
        axis=1,
    )


def test_fused_extractor_equals_each_backbone_on_each_view(backbones, images):
    expected = separately(backbones, images)
    fused = extract_features(build_extractor(backbones, SIZE, flips=True), images, batch_size=2)
    assert fused.shape == (5, 2, 4096) and fused.dtype == np.float32
    assert not np.allclose(expected[:, 0], expected[:, 1], rtol=1e-3, atol=0)  # the views do differ
    np.testing.assert_allclose(fused, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())


def test_without_flips_there_is_one_view(backbones, images):
    features = extract_features(build_extractor(backbones, SIZE, flips=False), images, batch_size=4)
    expected = separately(backbones, images)[:, :1]
    np.testing.assert_allclose(features, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())


def test_weights_load_from_legacy_h5_files_with_the_keras_names(tmp_path, backbones):
    (tmp_path / "keras-pretrained-models").mkdir()
    (tmp_path / "dog-breed-identification").symlink_to(INPUT_STUB / "dog-breed-identification")
    for name, backbone in zip(("xception", "inception_v3"), backbones):
        write_legacy_weights(backbone, tmp_path / "keras-pretrained-models" / BACKBONES[name].weights_file)
    _, weights = find_inputs(tmp_path, make_config(image_size=SIZE))
    for name, backbone in zip(("xception", "inception_v3"), backbones):
        loaded = build_backbone(name, SIZE, weights[name])
        assert len(loaded.weights) == len(backbone.weights)
        for theirs, ours in zip(loaded.weights, backbone.weights):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(theirs), keras.ops.convert_to_numpy(ours))
