"""The pretrained backbones features can come from: what Keras calls them, how they want their input,
and which file (and Kaggle dataset) holds their ImageNet weights.

Pure data, no TensorFlow import, so that configuration and input checks stay instant. Xception and
InceptionV3 are the seed's pair; every other keras.applications backbone is available by name, and
any subset is concatenated.
"""
from dataclasses import dataclass

KERAS_PRETRAINED = "gaborfodor/keras-pretrained-models"  # holds the classic backbones' .h5 files

# How each family scales RGB uint8 input, as its keras.applications preprocess_input does:
#   "tf": x / 127.5 - 1;  "caffe": BGR order, ImageNet means subtracted;  "torch": x / 255, then
#   ImageNet mean and std;  "raw": the model scales its own input (EfficientNet, ConvNeXt, MobileNetV3).
PREPROCESSING = ("tf", "caffe", "torch", "raw")


@dataclass(frozen=True)
class Backbone:
    constructor: str  # attribute of keras.applications
    weights_file: str  # Keras' own file name for the ImageNet no-top weights
    native_size: int  # the input side its ImageNet weights were trained at
    features: int  # width of its global-average-pooled output
    preprocessing: str  # one of PREPROCESSING
    min_size: int = 32  # smallest input side the architecture accepts
    dataset: str = ""  # a Kaggle dataset known to hold weights_file ("": none known; set weights_dataset)
    md5: str = ""  # the md5 Keras publishes for weights_file ("": none published under that name)


def _keras_file(stem):
    return f"{stem}_weights_tf_dim_ordering_tf_kernels_notop.h5"


BACKBONES = {
    "xception": Backbone(
        "Xception", _keras_file("xception"), 299, 2048, "tf", 71, KERAS_PRETRAINED, "b0042744bf5b25fce3cb969f33bebb97"
    ),
    "inception_v3": Backbone(
        "InceptionV3", _keras_file("inception_v3"), 299, 2048, "tf", 75, KERAS_PRETRAINED,
        "bcbd6486424b2319ff4ef7d526e38f63",
    ),
    "inception_resnet_v2": Backbone(
        "InceptionResNetV2", _keras_file("inception_resnet_v2"), 299, 1536, "tf", 75, KERAS_PRETRAINED,
        "d19885ff4a710c122648d3b5c3b684e4",
    ),
    "nasnet_large": Backbone("NASNetLarge", "NASNet-large-no-top.h5", 331, 4032, "tf", 32, KERAS_PRETRAINED),
    "nasnet_mobile": Backbone("NASNetMobile", "NASNet-mobile-no-top.h5", 224, 1056, "tf"),
    "resnet50": Backbone("ResNet50", _keras_file("resnet50"), 224, 2048, "caffe"),
    "resnet101": Backbone("ResNet101", _keras_file("resnet101"), 224, 2048, "caffe"),
    "resnet152": Backbone("ResNet152", _keras_file("resnet152"), 224, 2048, "caffe"),
    "resnet50_v2": Backbone("ResNet50V2", _keras_file("resnet50v2"), 224, 2048, "tf"),
    "resnet101_v2": Backbone("ResNet101V2", _keras_file("resnet101v2"), 224, 2048, "tf"),
    "resnet152_v2": Backbone("ResNet152V2", _keras_file("resnet152v2"), 224, 2048, "tf"),
    "vgg16": Backbone("VGG16", _keras_file("vgg16"), 224, 512, "caffe"),
    "vgg19": Backbone("VGG19", _keras_file("vgg19"), 224, 512, "caffe"),
    "densenet121": Backbone("DenseNet121", _keras_file("densenet121"), 224, 1024, "torch"),
    "densenet169": Backbone("DenseNet169", _keras_file("densenet169"), 224, 1664, "torch"),
    "densenet201": Backbone("DenseNet201", _keras_file("densenet201"), 224, 1920, "torch"),
    "mobilenet_v2": Backbone(
        "MobileNetV2", "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5", 224, 1280, "tf"
    ),
    **{
        f"efficientnet_b{index}": Backbone(f"EfficientNetB{index}", f"efficientnetb{index}_notop.h5", size, width, "raw")
        for index, (size, width) in enumerate(
            [(224, 1280), (240, 1280), (260, 1408), (300, 1536), (380, 1792), (456, 2048), (528, 2304), (600, 2560)]
        )
    },
    **{
        f"efficientnet_v2_{name}": Backbone(f"EfficientNetV2{name.upper()}", f"efficientnetv2-{name}_notop.h5", size, 1280, "raw")
        for name, size in [("s", 384), ("m", 480), ("l", 480)]
    },
    **{
        f"convnext_{name}": Backbone(f"ConvNeXt{suffix}", f"convnext_{name}_notop.h5", 224, width, "raw")
        for name, suffix, width in [("tiny", "Tiny", 768), ("small", "Small", 768), ("base", "Base", 1024),
                                    ("large", "Large", 1536), ("xlarge", "XLarge", 2048)]
    },
}
