"""Peak memory of a full-scale load plus extraction, in a process of its own so nothing else counts.

    python -m benchmarks.memory_probe --sources DIR --images 20579 --size 299
    python -m benchmarks.memory_probe --sources DIR --images 10222,10357 --size 448   # the kernel's two splits

Loads `--images` images at `--size` (cycling through the JPEGs in DIR, each one decoded again) with
kaggle_src's loader, extracts features with a cheap one-layer backbone through kaggle_src's extractor,
and prints one JSON line: the peak RSS, the RSS before loading, and the uint8 image bytes (of the largest split).
Several counts are loaded one after the other, as the kernel loads the training split, extracts it, lets its
images go and loads the test split: the features of each split are kept, the images of one at a time.
"""
import argparse
import json
import os
import resource
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from kaggle_src.extract_features import extract_features, fuse_views  # noqa: E402
from kaggle_src.load_images import LoadedImages  # noqa: E402


def cheap_backbone(size):
    """A stand-in backbone whose compute is negligible: what is measured is the pipeline's memory."""
    images = keras.Input((size, size, 3))
    features = keras.layers.Conv2D(16, 8, strides=8)(images)
    return keras.Model(images, keras.layers.GlobalAveragePooling2D()(features))


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=Path, required=True)
    parser.add_argument("--images", default="20579", help="images to load, or comma-separated counts, a split each")
    parser.add_argument("--size", type=int, default=299)
    args = parser.parse_args()
    sources = sorted(args.sources.glob("*.jpg"))
    extractor = fuse_views({"xception": cheap_backbone(args.size)}, args.size)  # fed as Xception would be
    before = peak_rss_bytes()
    features, image_bytes, seconds = [], [], 0.0
    for count in (int(count) for count in args.images.split(",")):
        images = LoadedImages([sources[index % len(sources)] for index in range(count)], args.size)
        features.append(extract_features(extractor, images, batch_size=64)[0])
        image_bytes.append(images.array.nbytes)
        seconds += images.seconds
        del images
    print(json.dumps({
        "images": args.images, "size": args.size, "image_bytes": max(image_bytes), "split_image_bytes": image_bytes,
        "features_bytes": sum(split.nbytes for split in features), "rss_before_loading": before,
        "peak_rss": peak_rss_bytes(), "load_seconds": seconds,
    }))


if __name__ == "__main__":
    main()
