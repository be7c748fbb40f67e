"""The pictures a competitor looks at before reading report.md: the training photos the submitted option gets most
wrong (mistakes.jpg), photos of the breeds it confuses most (confused.jpg), its calibration out of fold
(calibration.png) and, for leaderboard.py --scores, each submission's CV log loss beside its public score
(experiments.png).

The photo sheets are drawn with OpenCV from THUMBNAIL-px copies of the training images, made while a run holds them
in memory (make_thumbnails), so that no image is decoded twice and the full-size array can go; a run that read saved
features decodes the few photos the sheets show. The plots use matplotlib's object-oriented API on its Agg canvas:
no pyplot, no display. Each file is written to a temporary name and renamed, as every output is.
"""
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .ensembles import as_kaggle_scores
from .errors import warn
from .load_images import load_image
from .write_outputs import write_atomically

THUMBNAIL = 96  # px, a training image's copy kept for the sheets: 0.28 GB for the competition's 10,222 images
SCALE = 2  # a thumbnail is drawn at twice its size
PAD = 4  # px around each photo
FONT, FONT_SCALE, TITLE_SCALE, LINE = cv2.FONT_HERSHEY_SIMPLEX, 0.4, 0.5, 14  # the font, its scales, px a caption line
CAPTION_LINES = 4  # the true breed and the predicted one, two lines each at most
CELL_WIDTH = THUMBNAIL * SCALE + 2 * PAD
CELL_HEIGHT = THUMBNAIL * SCALE + 2 * PAD + CAPTION_LINES * LINE
HEADER = 28  # px of the title line above the cells
COLUMNS = 6  # photos per row of a sheet
MISTAKES = 24  # photos on mistakes.jpg
PAIRS, PER_SIDE = 4, 3  # confused.jpg: a row per pair, PER_SIDE photos of each breed
BINS = 10  # calibration.png's confidence bins, of equal width
JPEG_QUALITY = 85
MISTAKES_FILE, CONFUSED_FILE, CALIBRATION_FILE = "mistakes.jpg", "confused.jpg", "calibration.png"
BLACK, GREEN, RED = (0, 0, 0), (0, 110, 0), (190, 0, 0)  # RGB


def make_thumbnails(images):
    """THUMBNAIL-px copies of `images` (n, size, size, 3) uint8, made while a run holds its training images, so that
    the sheets need not decode them again."""
    thumbnails = np.empty((len(images), THUMBNAIL, THUMBNAIL, 3), np.uint8)
    for index, image in enumerate(images):
        thumbnails[index] = shrink(image, THUMBNAIL)
    return thumbnails


def shrink(image, size):
    """`image` resized to `size` x `size`: from more than twice as large, bilinear to twice the size, then averaged
    2 x 2 (INTER_AREA's fast path at an integer ratio), without aliasing at a third of INTER_AREA's time."""
    if image.shape[0] > 2 * size:
        image = cv2.resize(image, (2 * size, 2 * size), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


@dataclass
class Photos:
    """The submitted option's out-of-fold `probabilities` (n, classes) of the readable training photos, their
    `labels`, `ids` and `classes`, and `photo(row)`: that photo's thumbnail, or None if it cannot be read."""

    probabilities: np.ndarray
    labels: np.ndarray
    classes: list
    ids: list
    photo: Callable[[int], np.ndarray | None]

    def readable(self, rows, count):
        """The first `count` of `rows` whose photo can be read: [(row, thumbnail)]."""
        found = []
        for row in rows:
            if len(found) == count:
                break
            thumbnail = self.photo(row)
            if thumbnail is not None:
                found.append((row, thumbnail))
        return found

    def record(self, row):
        """What metrics.json records of a photo on a sheet: its id, true and predicted breeds, and the probability
        of each."""
        label, predicted = self.labels[row], int(self.probabilities[row].argmax())
        return {"id": self.ids[row], "breed": self.classes[label], "p_breed": float(self.probabilities[row, label]),
                "predicted": self.classes[predicted], "p_predicted": float(self.probabilities[row, predicted])}


def draw_pictures(chosen, labels, competition, readable, thumbnails, confused, output_dir):
    """Draw mistakes.jpg, confused.jpg and calibration.png of the `chosen` option's out-of-fold predictions of the
    `readable` training images (their indices; `labels`, their classes) into `output_dir`, the breed pairs it
    confused most being `confused` (report.confused_pairs); return what metrics.json records of them (None for a
    sheet not drawn, whose old file is removed).

    The photos come from `thumbnails` (make_thumbnails of every training image) or, in a run that read its features
    (None), from the files in train/: the few the sheets show. Unreadable photos are left out.
    """
    option = chosen.option.name
    probabilities = as_kaggle_scores(chosen.oof)
    if thumbnails is not None:
        def photo(row):
            return thumbnails[readable[row]]
    else:
        paths = competition.image_paths("train")

        @functools.cache
        def photo(row):
            return load_image(paths[readable[row]], THUMBNAIL)
    photos = Photos(probabilities, labels, competition.classes, [competition.train_ids[i] for i in readable], photo)
    pictures = {"mistakes": draw_mistakes(photos, option, output_dir / MISTAKES_FILE), "confused": None}
    if pictures["mistakes"] is None:
        warn(f"{competition.directory / 'train'}: no training photo could be read; {MISTAKES_FILE} and "
             f"{CONFUSED_FILE} not drawn")
    else:
        pictures["confused"] = draw_confused(photos, confused, option, output_dir / CONFUSED_FILE)
    pictures["calibration"] = draw_calibration(probabilities, labels, option, chosen.log_loss,
                                               output_dir / CALIBRATION_FILE)
    for name, file in (("mistakes", MISTAKES_FILE), ("confused", CONFUSED_FILE)):
        if pictures[name] is None:
            (output_dir / file).unlink(missing_ok=True)
    return pictures


def draw_mistakes(photos, option, path):
    """Write to `path` the MISTAKES readable photos of the highest out-of-fold log loss, highest first, each captioned
    with its true and predicted breeds and their probabilities (as many as there are, mistaken or not: the title
    says how many are); return {file, photos: their records}, or None when no photo can be read."""
    loss = -np.log(photos.probabilities[np.arange(len(photos.labels)), photos.labels])
    worst = photos.readable(np.argsort(-loss, kind="stable"), MISTAKES)
    if not worst:
        return None
    records = [photos.record(row) for row, _ in worst]
    mistaken = sum(record["predicted"] != record["breed"] for record in records)
    title = (f"The {len(records)} training photos of the highest out-of-fold log loss ({option}), "
             f"{mistaken} of them mistaken")
    write_jpeg(path, draw_sheet([thumbnail for _, thumbnail in worst], [caption(record) for record in records], title))
    return {"file": path.name, "photos": records}


def draw_confused(photos, confused, option, path):
    """Write to `path` a row for each of the first PAIRS `confused` pairs of breeds: PER_SIDE readable photos of
    each breed, those given the other breed's highest probability first; return {file, pairs: [{breeds, ids: [the
    first breed's, the second's]}]}, or None when no pair was confused."""
    if not confused:
        return None
    cells, pairs = [], []
    for pair in confused[:PAIRS]:
        first, second = (photos.classes.index(breed) for breed in pair["breeds"])
        ids = []
        for breed, other in ((first, second), (second, first)):
            rows = np.flatnonzero(photos.labels == breed)
            side = photos.readable(rows[np.argsort(-photos.probabilities[rows, other], kind="stable")], PER_SIDE)
            ids.append([photos.ids[row] for row, _ in side])
            cells += [(thumbnail, caption(photos.record(row))) for row, thumbnail in side]
            cells += [(None, [])] * (PER_SIDE - len(side))
        pairs.append({"breeds": pair["breeds"], "ids": ids})
    title = f"The {len(pairs)} breed pairs most confused out of fold ({option}): the photos most taken for the other"
    write_jpeg(path, draw_sheet([cell[0] for cell in cells], [cell[1] for cell in cells], title))
    return {"file": path.name, "pairs": pairs}


def caption(record):
    """A photo's caption lines [(text, RGB colour)]: its true breed and probability, then the predicted ones, in red
    when mistaken."""
    width = THUMBNAIL * SCALE
    colour = GREEN if record["predicted"] == record["breed"] else RED
    return ([(line, GREEN) for line in fit(f"true {record['p_breed']:.2f} {breed_name(record['breed'])}", width, 2)]
            + [(line, colour) for line in fit(f"pred {record['p_predicted']:.2f} "
                                              f"{breed_name(record['predicted'])}", width, 2)])


def breed_name(breed):
    """A breed as a caption shows it, words apart so that a long one wraps between them."""
    return breed.replace("_", " ")


def draw_sheet(photos, captions, title):
    """A white sheet under a `title` line, COLUMNS cells a row, each a photo (THUMBNAIL px RGB, or None: left blank)
    drawn SCALE times as large above its caption lines [(text, RGB colour)]; as BGR, for cv2.imencode."""
    rows = math.ceil(len(photos) / COLUMNS)
    sheet = np.full((HEADER + rows * CELL_HEIGHT, COLUMNS * CELL_WIDTH, 3), 255, np.uint8)
    [title] = fit(title, sheet.shape[1] - 2 * PAD, 1, TITLE_SCALE)
    cv2.putText(sheet, title, (PAD, HEADER - 9), FONT, TITLE_SCALE, BLACK, 1, cv2.LINE_AA)
    side = THUMBNAIL * SCALE
    for index, (photo, lines) in enumerate(zip(photos, captions)):
        top, left = HEADER + index // COLUMNS * CELL_HEIGHT + PAD, index % COLUMNS * CELL_WIDTH + PAD
        if photo is not None:
            sheet[top:top + side, left:left + side] = cv2.resize(photo, (side, side), interpolation=cv2.INTER_CUBIC)
        for number, (text, colour) in enumerate(lines, 1):
            cv2.putText(sheet, text, (left, top + side + number * LINE), FONT, FONT_SCALE, colour, 1, cv2.LINE_AA)
    return cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)


def fit(text, width, max_lines, scale=FONT_SCALE):
    """`text` in at most `max_lines` lines of at most `width` px in FONT at `scale`, broken after a space where it
    can be, else anywhere; the last line ends in "..." when the rest does not fit."""
    def fits(line):
        return cv2.getTextSize(line, FONT, scale, 1)[0][0] <= width

    lines, rest = [], text
    while rest and len(lines) < max_lines:
        end = len(rest)
        while end > 1 and not fits(rest[:end]):
            end -= 1
        if end < len(rest) and " " in rest[1:end + 1]:
            end = rest.rindex(" ", 1, end + 1) + 1
        lines.append(rest[:end].rstrip())
        rest = rest[end:].lstrip()
    if rest:
        last = lines[-1]
        while last and not fits(last + "..."):
            last = last[:-1]
        lines[-1] = last + "..."
    return lines


def draw_calibration(probabilities, labels, option, log_loss, path):
    """Write to `path` the reliability diagram of out-of-fold `probabilities`: in BINS bins of confidence (the top
    probability), the accuracy, the count, and each bin's mean confidence against its accuracy beside the line of
    perfect calibration, titled with the `log_loss` and the expected calibration error; return {file, log_loss,
    expected_calibration_error, bins: the non-empty ones}."""
    confidence, right = probabilities.max(axis=1), probabilities.argmax(axis=1) == labels
    edges = np.linspace(0, 1, BINS + 1)
    which = np.digitize(confidence, edges[1:-1])
    bins = [
        {"from": float(edges[index]), "to": float(edges[index + 1]), "count": int(inside.sum()),
         "confidence": float(confidence[inside].mean()), "accuracy": float(right[inside].mean())}
        for index, inside in ((index, which == index) for index in range(BINS)) if inside.any()
    ]
    error = sum(row["count"] * abs(row["accuracy"] - row["confidence"]) for row in bins) / len(labels)
    figure = Figure(figsize=(6.4, 4.8), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    bars = axes.bar([row["from"] for row in bins], [row["accuracy"] for row in bins], width=1 / BINS, align="edge",
                    color="#9ecae1", edgecolor="black", label="accuracy in the bin (count above)")
    axes.bar_label(bars, labels=[f"{row['count']:,}" for row in bins], padding=2, fontsize=8)
    axes.plot([row["confidence"] for row in bins], [row["accuracy"] for row in bins], "o-", color="#d62728",
              label="mean confidence, accuracy")
    axes.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
    axes.set(xlim=(0, 1), ylim=(0, 1.1), xlabel="confidence: the top probability", ylabel="accuracy",
             title=f"{option}, out of fold\nlog loss {log_loss:.4f}, expected calibration error {error:.3f}")
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=3, fontsize=8, frameon=False)
    write_png(path, figure)
    return {"file": path.name, "log_loss": log_loss, "expected_calibration_error": error, "bins": bins}


def draw_experiments(rows, path):
    """Write to `path` experiments.png from the experiments log's `rows` (leaderboard.read_log): each submission's CV
    log loss and public score in order, and the one against the other beside the line y = x, where a widening gap
    shows. Return the submissions [(number, CV log loss or None, public score or None)]; when none has a public
    score, draw nothing (an old picture is removed) and return []."""
    submissions = [(number, _number(row["cv_log_loss"]), _number(row["public_score"]))
                   for number, row in enumerate((row for row in rows if row["action"] == "submit"), 1)]
    if not any(public is not None for _, _, public in submissions):
        Path(path).unlink(missing_ok=True)
        return []
    figure = Figure(figsize=(11, 4.5), dpi=100, layout="constrained")
    in_order, against = figure.subplots(1, 2)
    for column, label, marker in ((1, "CV log loss (out of fold)", "o-"), (2, "public leaderboard", "s-")):
        points = [(row[0], row[column]) for row in submissions if row[column] is not None]
        in_order.plot(*zip(*points), marker, label=label)
    in_order.set(xlabel="submission", ylabel="log loss", title="In order")
    in_order.xaxis.get_major_locator().set_params(integer=True)
    in_order.legend()
    both = [row for row in submissions if None not in row]
    against.plot([cv for _, cv, _ in both], [public for _, _, public in both], "o", color="#d62728")
    for number, cv, public in both:
        against.annotate(str(number), (cv, public), textcoords="offset points", xytext=(4, 4), fontsize=8)
    scores = [score for row in submissions for score in row[1:] if score is not None]
    margin = 0.08 * (max(scores) - min(scores)) or 0.01
    low, high = min(scores) - margin, max(scores) + margin
    against.plot([low, high], [low, high], "--", color="grey", label="y = x: public as CV")
    against.set(xlim=(low, high), ylim=(low, high), xlabel="CV log loss", ylabel="public score",
                title="Public against CV, by submission", aspect="equal")
    against.legend(loc="upper left")
    scored = sum(public is not None for _, _, public in submissions)
    figure.suptitle(f"{len(submissions)} submissions, {scored} with a public score")
    write_png(path, figure)
    return submissions


def write_jpeg(path, sheet):
    """Write a BGR `sheet` as a JPEG, atomically."""
    data = cv2.imencode(".jpg", sheet, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1]
    write_atomically(path, lambda temporary: Path(temporary).write_bytes(data.tobytes()))


def write_png(path, figure):
    """Write a matplotlib `figure` as a PNG through the Agg canvas, atomically."""
    FigureCanvasAgg(figure)
    write_atomically(path, lambda temporary: figure.savefig(temporary, format="png"))


def _number(text):
    """A float from the experiments log's `text`, or None where it holds none."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return None
