"""Stage 3: the 4096-d Xception + InceptionV3 features of each image and of its horizontal flip.

One Keras model does it all on the device: it takes a uint8 batch, casts and scales it to [-1, 1]
(both backbones' preprocessing), adds the flipped copy of the same batch, runs each backbone once
over both views and returns the concatenated pooled features as (batch, views, features). So each
image crosses to the GPU once, as uint8, and the data is passed over once — where the seed ran
`predict` four times over float32 host copies.
"""
import keras
import numpy as np
from keras import ops

from .backbones import BACKBONES


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


def build_extractor(backbones, image_size, flips=True):
    """One model: uint8 images (batch, size, size, 3) -> float32 features (batch, views, sum of widths)."""
    images = keras.Input((image_size, image_size, 3), dtype="uint8", name="images")
    scaled = ops.cast(images, "float32") / 127.5 - 1.0
    views = [scaled, ops.flip(scaled, axis=2)] if flips else [scaled]
    stacked = ops.concatenate(views, axis=0)  # (views * batch, ...): one backbone call per batch
    features = ops.concatenate([backbone(stacked) for backbone in backbones], axis=-1)
    per_view = ops.stack(ops.split(features, len(views), axis=0), axis=1)
    return keras.Model(images, ops.cast(per_view, "float32"), name="extractor")


def extract_features(extractor, images, batch_size):
    """Run the extractor over a uint8 image array; returns float32 (n_images, views, features)."""
    return np.asarray(extractor.predict(images, batch_size=batch_size, verbose=2), np.float32)
