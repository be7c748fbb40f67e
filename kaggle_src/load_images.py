"""Stage 2: decode every image into one preallocated uint8 RGB array, in parallel threads.

uint8 keeps the training set at 299x299 to 2.7 GB (float32 would be 11 GB); the cast and scaling
happen on the device, in the feature extractor. OpenCV decodes as BGR, so each image is turned to
RGB here, once. OpenCV releases the GIL while decoding and resizing, so threads scale across
cores and write straight into the shared array, with no copies between processes.
"""
import cv2
import numpy as np
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from .config import warn


def load_image(path, size):
    """One image as a (size, size, 3) uint8 RGB array, or None when the file is missing, empty or not decodable.

    The format comes from the bytes, not the name (a PNG behind .jpg decodes); greyscale, alpha and CMYK
    images become RGB, and EXIF orientation is applied. A truncated JPEG that OpenCV decodes in part
    (4.x does; 5.x refuses it) is used, with a warning naming the file.
    """
    try:
        data = np.fromfile(path, np.uint8)  # not cv2.imread: it logs its own line for a missing file
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    except (OSError, cv2.error):  # cv2.error: e.g. a header claiming more pixels than OpenCV's limit
        return None
    if image is None:
        return None
    if data[:2].tobytes() == b"\xff\xd8" and data[-2:].tobytes() != b"\xff\xd9":
        warn(f"{path}: JPEG without its end-of-image marker (truncated?); using the part that decodes")
    image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def load_images(paths, size, n_jobs=-1, desc="images"):
    """All `paths` as one (len(paths), size, size, 3) uint8 RGB array, behind a progress bar, and the
    sorted indices of the images load_image could not read (their rows stay zero)."""
    images = np.zeros((len(paths), size, size, 3), np.uint8)

    def load_into(index):
        image = load_image(paths[index], size)
        if image is not None:
            images[index] = image
        return image is not None

    done = Parallel(n_jobs=n_jobs, prefer="threads", return_as="generator")(
        delayed(load_into)(index) for index in range(len(paths))
    )
    loaded = list(tqdm(done, total=len(paths), desc=f"load {desc}", unit="img", mininterval=2))
    return images, [index for index, ok in enumerate(loaded) if not ok]
