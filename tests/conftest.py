"""Shared fixtures and helpers: a small generated stub and its one quick run, and images damaged or oddly encoded in
every way the pipeline must survive (and one run over them). Each end-to-end run is made once per session (per
pytest-xdist worker that needs it) and shared by every test that reads it."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One BLAS thread, here and in every subprocess: with OpenBLAS's two, small numpy products took 6 to 40 times as
# long on this 2-core machine (measured when the logistic regressions were scikit-learn's, most of a run's time).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# pytest.ini runs the tests in pytest-xdist's workers, a process per core: one TensorFlow thread each, or every
# worker's threads contend for every core.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

import contextlib  # noqa: E402
import io  # noqa: E402
import shutil  # noqa: E402
import struct  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from make_stub import COMPETITION, make_stub  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
INPUT_STUB = REPO / "input_stub"
# A dry run of a few seconds on small_stub: one small backbone at a small size, few epochs. The default pair runs end
# to end in test_dry_run.py (the package) and in the kernel on the oldest supported versions (test_build_kernel.py).
QUICK = ["--dry-run", "--backbones", "mobilenet_v2", "--image-size", "75", "--max-epochs", "5"]


# pytest-xdist hands each test file to one worker, in collection order (pytest.ini): these files, the longest, first
# (seconds on a quiet 2-core CPU: about 65, 60, 35, 30, 25, 20, 20, 15), so that no worker is left running one of them
# while the other idles.
LONGEST_FIRST = ("test_extract_features.py", "test_dry_run.py", "test_real_weights.py", "test_pipeline.py",
                 "test_leaderboard_loop.py", "test_build_kernel.py", "test_benchmarks.py", "test_weights_run.py")


def pytest_collection_modifyitems(items):
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file's tests keep their order


def readme_table(section, first_cell, readme=REPO / "README.md"):
    """The rows, as lists of cells, of the table in `readme`'s `## section` whose first cell starts with `first_cell`
    (the header and rule rows left out)."""
    text = readme.read_text().split(f"\n## {section}\n")[1].split("\n## ")[0]
    rows = [line for line in text.splitlines() if line.startswith(f"| {first_cell}")]
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows]


def sheet_cell(sheet, index):
    """The photo in cell `index` of a photo sheet read back with cv2.imread (BGR), as RGB."""
    from kaggle_src.pictures import CELL_HEIGHT, CELL_WIDTH, COLUMNS, HEADER, PAD, SCALE, THUMBNAIL

    top, left = HEADER + index // COLUMNS * CELL_HEIGHT + PAD, index % COLUMNS * CELL_WIDTH + PAD
    return sheet[top:top + THUMBNAIL * SCALE, left:left + THUMBNAIL * SCALE, ::-1]


def assert_sheet_shows(sheet_file, image_paths, image_size):
    """The photo sheet in `sheet_file` shows the images at `image_paths`, cell by cell, as a run that loaded them at
    `image_size` made their thumbnails (within JPEG's error)."""
    from kaggle_src.load_images import load_image
    from kaggle_src.pictures import SCALE, THUMBNAIL, make_thumbnails

    sheet = cv2.imread(str(sheet_file))
    for index, path in enumerate(image_paths):
        thumbnail = make_thumbnails(load_image(path, image_size)[None])[0]
        expected = cv2.resize(thumbnail, (THUMBNAIL * SCALE,) * 2, interpolation=cv2.INTER_CUBIC)
        difference = np.abs(sheet_cell(sheet, index).astype(int) - expected).mean()
        assert difference < 6, f"cell {index} of {sheet_file.name}: differs from {path.name} by {difference:.1f}"


def warnings_in(stderr):
    """The `warning: ` lines of a run's stderr."""
    return [line for line in stderr.splitlines() if line.startswith("warning: ")]


def exif_segment(orientation):
    """A JPEG APP1 segment with one EXIF tag, Orientation (0x0112), in big-endian TIFF layout."""
    tiff = b"MM\x00\x2a" + struct.pack(">IH", 8, 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + bytes(4)
    payload = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def with_exif(jpeg, orientation):
    """`jpeg` bytes with an EXIF orientation tag, right after the start-of-image marker."""
    return jpeg[:2] + exif_segment(orientation) + jpeg[2:]


def flat_cmyk_jpeg(cmyk, height, width):
    """A baseline 4-component JPEG, as Adobe writes CMYK (inverted values, APP14 transform 0), every pixel `cmyk`.

    OpenCV cannot write CMYK, so this encodes it by hand: quantiser 1, one DC-only block per 8x8 tile.
    """
    dc_bits = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]  # JPEG's standard luminance DC table (Annex K)
    dc_codes, code = [], 0  # canonical Huffman codes of DC sizes 0..11
    for length, count in enumerate(dc_bits, 1):
        dc_codes += [(code + offset, length) for offset in range(count)]
        code = (code + count) << 1
    bits, previous = [], [0] * 4

    def put(value, length):
        bits.extend((value >> shift) & 1 for shift in reversed(range(length)))

    for _ in range(((height + 7) // 8) * ((width + 7) // 8)):
        for component, value in enumerate(cmyk):
            difference = 8 * (value - 128) - previous[component]  # DC of a flat block: 8 * (value - 128)
            previous[component] += difference
            size = abs(difference).bit_length()
            put(*dc_codes[size])
            put(difference if difference >= 0 else difference - 1 + (1 << size), size)
            put(0, 1)  # end of block, the AC table's only code
    bits += [1] * (-len(bits) % 8)
    scan = bytes(int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits), 8))

    def segment(marker, payload):
        return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload

    components = range(1, 5)
    return (
        b"\xff\xd8"
        + segment(0xEE, b"Adobe" + struct.pack(">HHHB", 100, 0, 0, 0))
        + segment(0xDB, b"\x00" + b"\x01" * 64)
        + segment(0xC0, struct.pack(">BHHB", 8, height, width, 4) + b"".join(bytes([c, 0x11, 0]) for c in components))
        + segment(0xC4, b"\x00" + bytes(dc_bits) + bytes(range(12)) + b"\x10" + bytes([1] + [0] * 15) + b"\x00")
        + segment(0xDA, b"\x04" + b"".join(bytes([c, 0]) for c in components) + b"\x00\x3f\x00")
        + scan.replace(b"\xff", b"\xff\x00")  # byte stuffing
        + b"\xff\xd9"
    )


def encode(extension, image, params=()):
    """`image` encoded as `extension` says (".jpg", ".png", ...), as bytes."""
    return cv2.imencode(extension, image, list(params))[1].tobytes()


# Damage that leaves an image no decoder reads: kind -> its new bytes from its old ones (None: the file is deleted).
UNREADABLE = {
    "missing": None,
    "empty": lambda data: b"",
    "cut_in_its_header": lambda data: data[:200],
    "not_an_image": lambda data: b"<html><body>404 Not Found</body></html>",
}
# Odd but valid encodings of a picture: kind -> bytes from its BGR pixels.
ODD = {
    "greyscale": lambda bgr: encode(".jpg", cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)),
    "png_behind_jpg": lambda bgr: encode(".png", bgr),
    "alpha_png": lambda bgr: encode(".png", cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)),
    "progressive": lambda bgr: encode(".jpg", bgr, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
    "exif_rotated": lambda bgr: with_exif(encode(".jpg", cv2.rotate(bgr, cv2.ROTATE_90_COUNTERCLOCKWISE)), 6),
    "tiny": lambda bgr: encode(".jpg", cv2.resize(bgr, (10, 10), interpolation=cv2.INTER_AREA)),
    "huge": lambda bgr: encode(".jpg", cv2.resize(bgr, (5000, 3750))),
    "cmyk": lambda bgr: flat_cmyk_jpeg([*bgr.mean(axis=(0, 1)).astype(int).tolist()[::-1], 255], *bgr.shape[:2]),
}


def damage(path, kind):
    """Rewrite the image at `path` as `kind`, one of UNREADABLE or ODD."""
    if kind in ODD:
        path.write_bytes(ODD[kind](cv2.imread(str(path))))
    elif UNREADABLE[kind] is None:
        path.unlink()
    else:
        path.write_bytes(UNREADABLE[kind](path.read_bytes()))


def write_quirky_csv(table, path):
    """`table` as a CSV with a BOM, CRLF line ends and spaces around every id."""
    table = table.assign(id=" " + table["id"] + "  ")
    path.write_bytes(b"\xef\xbb\xbf" + table.to_csv(index=False, lineterminator="\r\n").encode())


@pytest.fixture(scope="session")
def small_stub(tmp_path_factory):
    """A 10-breed stub (6 train, 2 test images per breed): the input root that holds it."""
    root = tmp_path_factory.mktemp("small_stub")
    make_stub(root, classes=10, train_per_class=6, test_per_class=2, seed=1)
    return root


@pytest.fixture(scope="session")
def quick_run(small_stub, tmp_path_factory):
    """small_stub through `python -m kaggle_src`'s entry with QUICK, once per session: its output folder."""
    from kaggle_src.pipeline import main

    output_dir = tmp_path_factory.mktemp("quick_run")
    assert main(["--input-root", str(small_stub), "--output-dir", str(output_dir), *QUICK]) == 0
    return output_dir


@pytest.fixture(scope="session")
def damaged_stub(small_stub, tmp_path_factory):
    """A copy of small_stub with every kind of UNREADABLE and ODD image, and quirky CSVs: (input root, {id: kind}).

    Each kind takes a test image; the first ten kinds also take a training image, each of another breed (so
    every breed keeps 5 for 5-fold CV). labels.csv lists one undamaged id twice with its breed.
    """
    root = tmp_path_factory.mktemp("damaged_stub")
    shutil.copytree(small_stub, root, dirs_exist_ok=True)
    competition = root / COMPETITION
    labels = pd.read_csv(competition / "labels.csv", dtype=str)
    sample = pd.read_csv(competition / "sample_submission.csv", dtype=str)
    damaged = {}
    for split, ids in (("train", labels.drop_duplicates("breed")["id"]), ("test", sample["id"])):
        for image_id, kind in zip(ids, [*UNREADABLE, *ODD]):
            damage(competition / split / f"{image_id}.jpg", kind)
            damaged[image_id] = kind
    repeated = labels[~labels["id"].isin(damaged)].iloc[[0]]
    write_quirky_csv(pd.concat([labels, repeated]), competition / "labels.csv")
    write_quirky_csv(sample, competition / "sample_submission.csv")
    return root, damaged


@pytest.fixture(scope="session")
def damaged_run(damaged_stub, tmp_path_factory):
    """`python -m kaggle_src`'s entry over damaged_stub, once: its exit code, stderr, output folder, and the
    labels that the heads were trained on."""
    from kaggle_src import pipeline, train_heads as heads_module

    root, damaged = damaged_stub
    output_dir = tmp_path_factory.mktemp("damaged_run")
    train_heads, trained, stderr = heads_module.train_heads, [], io.StringIO()

    def recording_train_heads(features, labels, *args):
        trained.append(labels)
        return train_heads(features, labels, *args)

    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stderr(stderr):
        patch.setattr(heads_module, "train_heads", recording_train_heads)  # pipeline imports it when run
        code = pipeline.main(["--input-root", str(root), "--output-dir", str(output_dir), *QUICK])
    return SimpleNamespace(
        code=code, stderr=stderr.getvalue(), output_dir=output_dir, trained_labels=trained[0] if trained else None
    )
