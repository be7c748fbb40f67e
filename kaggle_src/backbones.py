"""The pretrained backbones the features come from: what Keras calls them and where their weights are.

Pure data, no TensorFlow import, so that configuration and input checks stay instant.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Backbone:
    constructor: str  # attribute of keras.applications
    weights_file: str  # Keras' own file name for the ImageNet no-top weights
    min_size: int  # smallest input side the architecture accepts
    features: int  # width of its global-average-pooled output


BACKBONES = {
    "xception": Backbone("Xception", "xception_weights_tf_dim_ordering_tf_kernels_notop.h5", 71, 2048),
    "inception_v3": Backbone(
        "InceptionV3", "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5", 75, 2048
    ),
}
