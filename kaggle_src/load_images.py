"""Stage 2: decode every image into one preallocated uint8 RGB array, in background threads.

uint8 keeps the training set at 299x299 to 2.7 GB (float32 would be 11 GB); the cast and scaling
happen on the device, in the feature extractor. OpenCV decodes as BGR, so each image is turned to
RGB here, once. OpenCV releases the GIL while decoding and resizing, so threads scale across
cores and write straight into the shared array, with no copies between processes.

Loading starts at once and runs behind the caller: `LoadedImages.batches` hands out each batch as
soon as its images are in, so the GPU extracts features from one batch while the next are decoded.
"""
import threading
import time

import cv2
import numpy as np
from joblib import Parallel, delayed

from .errors import warn


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
    # Bilinear, as the seed's cv2.resize; INTER_AREA (slower) only where bilinear would alias badly.
    shrink = min(image.shape[:2]) / size
    image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink >= 2 else cv2.INTER_LINEAR)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class LoadedImages:
    """`paths` decoded in order into `array` (n, size, size, 3) uint8 by `n_jobs` threads, in the background.

    Rows of images that could not be read stay zero; their indices are in `failed` once loading is done. Its
    progress shows in the bar of whoever takes its batches (the extraction's).
    """

    def __init__(self, paths, size, n_jobs=-1, desc="images"):
        self.paths, self.size, self.n_jobs, self.desc = list(paths), size, n_jobs, desc
        self.array = np.zeros((len(self.paths), size, size, 3), np.uint8)
        self.failed = []
        self.seconds = 0.0  # wall time from the start to the last image in
        self._loaded = 0  # images 0 .. _loaded-1 are in
        self._error = None
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._load, name=f"load {desc}", daemon=True)
        self._thread.start()

    def __len__(self):
        return len(self.paths)

    def _load(self):
        def load_into(index):
            image = load_image(self.paths[index], self.size)
            if image is not None:
                self.array[index] = image
            return image is not None

        started = time.perf_counter()
        try:
            done = Parallel(n_jobs=self.n_jobs, prefer="threads", return_as="generator")(
                delayed(load_into)(index) for index in range(len(self.paths))
            )
            for index, loaded in enumerate(done):
                with self._changed:
                    if not loaded:
                        self.failed.append(index)
                    self._loaded = index + 1
                    self.seconds = time.perf_counter() - started
                    self._changed.notify_all()
        except BaseException as error:  # handed to the consumer, which is waiting on this thread
            with self._changed:
                self._error = error
                self._changed.notify_all()

    def _wait_for(self, count):
        with self._changed:
            self._changed.wait_for(lambda: self._loaded >= count or self._error is not None)
            if self._error is not None:
                raise self._error

    def batches(self, batch_size):
        """Consecutive slices of `array` of `batch_size` images, each yielded as soon as it is loaded."""
        for start in range(0, len(self), batch_size):
            stop = min(start + batch_size, len(self))
            self._wait_for(stop)
            yield self.array[start:stop]
