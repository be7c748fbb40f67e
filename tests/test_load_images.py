import struct
import zlib

import cv2
import numpy as np
import pytest

from kaggle_src.load_images import LoadedImages, load_image
from tests.conftest import encode, flat_cmyk_jpeg, with_exif

RED, BLUE = (250, 0, 0), (0, 0, 250)  # RGB


def write(path, bgr_or_grey):
    assert cv2.imwrite(str(path), bgr_or_grey)
    return path


def red_left_blue_right(height, width):
    """A BGR image, red on its left half and blue on its right."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2], image[:, width // 2 :] = RED[::-1], BLUE[::-1]
    return image


def assert_halves(rgb, first, second, axis=1):
    """`rgb` is colour `first` on its first quarter along `axis` (1: left, 0: top) and `second` on its last."""
    size = rgb.shape[axis]
    np.testing.assert_allclose(np.take(rgb, range(size // 4), axis).mean(axis=(0, 1)), first, atol=12)
    np.testing.assert_allclose(np.take(rgb, range(size - size // 4, size), axis).mean(axis=(0, 1)), second, atol=12)


def noisy_jpeg(height=200, width=300):
    """JPEG bytes of a smooth random image: big enough that cutting it leaves whole blocks."""
    noise = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    return encode(".jpg", cv2.GaussianBlur(noise, (9, 9), 3))


def test_colours_come_out_rgb_and_resized_uint8(tmp_path):
    bgr = np.zeros((40, 60, 3), np.uint8)
    bgr[..., 2] = 250  # pure red, in OpenCV's BGR order
    image = load_image(write(tmp_path / "red.png", bgr), 32)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert (image[..., 0] == 250).all() and (image[..., 1:] == 0).all()


def test_greyscale_and_alpha_images_become_rgb(tmp_path):
    grey = write(tmp_path / "grey.png", np.full((20, 30), 77, np.uint8))
    bgra = np.zeros((20, 30, 4), np.uint8)
    bgra[..., 0], bgra[..., 3] = 200, 128  # blue, half transparent
    alpha = write(tmp_path / "alpha.png", bgra)
    assert (load_image(grey, 16) == 77).all()
    rgb = load_image(alpha, 16)
    assert rgb.shape == (16, 16, 3) and (rgb[..., 2] == 200).all() and (rgb[..., :2] == 0).all()


@pytest.mark.parametrize("extension", [".png", ".bmp", ".webp", ".tiff"])
def test_another_format_behind_a_jpg_name_decodes(tmp_path, extension):
    path = tmp_path / "photo.jpg"
    path.write_bytes(encode(extension, red_left_blue_right(40, 60)))
    assert_halves(load_image(path, 32), RED, BLUE)


def test_a_progressive_jpeg_decodes(tmp_path):
    data = encode(".jpg", red_left_blue_right(40, 60), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert b"\xff\xc2" in data  # SOF2: progressive
    (tmp_path / "progressive.jpg").write_bytes(data)
    assert_halves(load_image(tmp_path / "progressive.jpg", 32), RED, BLUE)


@pytest.mark.parametrize("height, width", [(10, 10), (5000, 3750)])
def test_tiny_and_huge_images_are_resized(tmp_path, height, width):
    path = write(tmp_path / "image.jpg", red_left_blue_right(height, width))
    image = load_image(path, 75)
    assert image.shape == (75, 75, 3)
    assert_halves(image, RED, BLUE)


@pytest.mark.parametrize(
    "orientation, first, second, axis",
    [(1, RED, BLUE, 1), (3, BLUE, RED, 1), (6, RED, BLUE, 0), (8, BLUE, RED, 0)],  # 6: turn 90° clockwise to view
)
def test_exif_orientation_is_applied(tmp_path, orientation, first, second, axis):
    path = tmp_path / "rotated.jpg"
    path.write_bytes(with_exif(encode(".jpg", red_left_blue_right(40, 60)), orientation))
    assert_halves(load_image(path, 32), first, second, axis)


@pytest.mark.parametrize("cmyk", [(55, 155, 205, 255), (200, 100, 50, 128)])
def test_a_cmyk_jpeg_becomes_rgb(tmp_path, cmyk):
    path = tmp_path / "cmyk.jpg"
    path.write_bytes(flat_cmyk_jpeg(cmyk, 20, 30))
    image = load_image(path, 16)
    # Adobe's inverted CMYK: each of R, G, B is the stored C, M, Y scaled by the stored K.
    np.testing.assert_allclose(image.reshape(-1, 3).mean(axis=0), np.array(cmyk[:3]) * cmyk[3] / 255, atol=3)


def test_a_truncated_jpeg_is_used_with_a_warning_where_opencv_decodes_part_of_it(tmp_path, capsys):
    data = noisy_jpeg()
    path = tmp_path / "truncated.jpg"
    path.write_bytes(data[: len(data) * 2 // 3])
    image = load_image(path, 32)
    if cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR) is None:  # OpenCV 5 refuses truncated JPEGs
        assert image is None and capsys.readouterr().err == ""
    else:  # OpenCV 4 decodes what is there
        assert image.shape == (32, 32, 3)
        assert capsys.readouterr().err == (
            f"warning: {path}: JPEG without its end-of-image marker (truncated?); using the part that decodes\n"
        )


def test_parallel_loading_keeps_the_order(tmp_path):
    paths = [write(tmp_path / f"{value}.png", np.full((10 + value, 12, 3), value * 10, np.uint8)) for value in range(12)]
    loading = LoadedImages(paths, 8, n_jobs=2)
    images = next(loading.batches(len(paths)))  # one batch of every image, once all are in
    assert images.shape == (12, 8, 8, 3) and images.dtype == np.uint8 and loading.failed == []
    assert [int(image.mean()) for image in images] == [value * 10 for value in range(12)]


def oversized_png():
    """A PNG whose header claims 200000 x 200000 pixels, past OpenCV's limit (cv2.imdecode raises)."""
    png = encode(".png", np.zeros((4, 4, 3), np.uint8))
    header = b"IHDR" + struct.pack(">IIBBBBB", 200_000, 200_000, 8, 2, 0, 0, 0)
    return png[:8] + struct.pack(">I", 13) + header + struct.pack(">I", zlib.crc32(header)) + png[33:]


def test_unreadable_images_are_listed_and_left_blank(tmp_path, capsys):
    good = write(tmp_path / "good.jpg", np.full((10, 10, 3), 9, np.uint8))
    damaged = {
        "garbage.jpg": b"not a jpeg",
        "empty.jpg": b"",
        "cut_in_its_header.jpg": noisy_jpeg()[:300],
        "oversized.jpg": oversized_png(),
    }
    for name, data in damaged.items():
        (tmp_path / name).write_bytes(data)
    paths = [tmp_path / "missing.jpg", good, *(tmp_path / name for name in damaged), tmp_path]  # last: a folder
    loading = LoadedImages(paths, 8, n_jobs=2)
    images = next(loading.batches(len(paths)))  # one batch of every image, once all are in
    assert loading.failed == [0, 2, 3, 4, 5, 6]
    assert (images[1] == 9).all() and (np.delete(images, 1, axis=0) == 0).all()
    assert "warning" not in capsys.readouterr().err  # the pipeline, which knows the ids, does the warning
