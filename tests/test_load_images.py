import cv2
import numpy as np

from kaggle_src.load_images import load_image, load_images


def write(path, bgr_or_grey):
    assert cv2.imwrite(str(path), bgr_or_grey)
    return path


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


def test_parallel_loading_keeps_the_order(tmp_path):
    paths = [write(tmp_path / f"{value}.png", np.full((10 + value, 12, 3), value * 10, np.uint8)) for value in range(12)]
    images = load_images(paths, 8, n_jobs=2).result()
    assert images.shape == (12, 8, 8, 3) and images.dtype == np.uint8
    assert [int(image.mean()) for image in images] == [value * 10 for value in range(12)]


def test_unreadable_images_are_listed_and_left_blank(tmp_path):
    good = write(tmp_path / "good.png", np.full((10, 10, 3), 9, np.uint8))
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    loading = load_images([good, bad, tmp_path / "missing.jpg"], 8)
    images = loading.result()
    assert loading.failed == [1, 2]
    assert (images[0] == 9).all() and (images[1:] == 0).all()
