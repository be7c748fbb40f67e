"""The pictures on small arrays: each read back from its file (size, grid, the photos in their cells), and the bad
input a run can meet: few mistakes, long breed names, unreadable photos, no photo at all, an experiments log without
scores. (A whole run's pictures, against its oof_predictions.csv: test_dry_run.py.)"""
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from kaggle_src import pictures
from kaggle_src.find_inputs import Competition
from kaggle_src.pictures import (
    CELL_HEIGHT, CELL_WIDTH, COLUMNS, HEADER, MISTAKES, PER_SIDE, SCALE, THUMBNAIL, Photos, draw_calibration,
    draw_confused, draw_experiments, draw_mistakes, draw_pictures, fit, make_thumbnails,
)
from kaggle_src.report import confused_pairs
from tests.conftest import sheet_cell, warnings_in

LONG = "american_staffordshire_terrier_longhaired"[:40]  # a breed name of 40 characters


def flat_photos(n, seed=0):
    """`n` thumbnails, each one flat colour of its own: (n, THUMBNAIL, THUMBNAIL, 3) uint8 RGB, and the colours."""
    colours = np.random.default_rng(seed).integers(30, 226, (n, 3)).astype(np.uint8)
    return np.broadcast_to(colours[:, None, None], (n, THUMBNAIL, THUMBNAIL, 3)).copy(), colours


def predictions(n, classes, wrong, seed=0):
    """Out-of-fold probabilities (n, classes) whose top class is the label except on rows `wrong`, and the labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    logits = rng.normal(0, 1, (n, classes))
    logits[np.arange(n), labels] += 4
    for row in wrong:
        logits[row, (labels[row] + 1) % classes] = logits[row].max() + 2
    probabilities = np.exp(logits)
    return probabilities / probabilities.sum(axis=1, keepdims=True), labels


def photos_of(probabilities, labels, classes, thumbnails, unreadable=()):
    return Photos(probabilities, labels, classes, [f"id{row:03d}" for row in range(len(labels))],
                  lambda row: None if row in unreadable else thumbnails[row])


def assert_cells_show(sheet, colours):
    """Cell i of `sheet` (read back, BGR) shows flat colours[i] (None: a blank, white cell), within JPEG's error."""
    for index, colour in enumerate(colours):
        expected = np.full(3, 255) if colour is None else colour
        middle = sheet_cell(sheet, index)[20:-20, 20:-20]
        np.testing.assert_allclose(middle.reshape(-1, 3).mean(axis=0), expected, atol=6, err_msg=f"cell {index}")


def test_thumbnails_are_small_faithful_copies():
    rng = np.random.default_rng(0)
    smooth = [cv2.resize(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8), (448, 448), interpolation=cv2.INTER_CUBIC)
              for _ in range(3)]
    thumbnails = make_thumbnails(np.stack(smooth))
    assert thumbnails.shape == (3, THUMBNAIL, THUMBNAIL, 3) and thumbnails.dtype == np.uint8
    for image, thumbnail in zip(smooth, thumbnails):  # as close to INTER_AREA's as JPEG's own error
        area = cv2.resize(image, (THUMBNAIL, THUMBNAIL), interpolation=cv2.INTER_AREA)
        assert np.abs(thumbnail.astype(int) - area).mean() < 1.5
    assert make_thumbnails(np.zeros((2, 75, 75, 3), np.uint8)).shape == (2, THUMBNAIL, THUMBNAIL, 3)  # small: enlarged


def test_mistakes_sheet_is_the_highest_loss_photos_highest_first_in_a_grid(tmp_path):
    probabilities, labels = predictions(60, 5, wrong=range(0, 60, 2))
    thumbnails, colours = flat_photos(60)
    drawn = draw_mistakes(photos_of(probabilities, labels, list("abcde"), thumbnails), "tta", tmp_path / "m.jpg")
    loss = -np.log(probabilities[np.arange(60), labels])
    worst = np.argsort(-loss)[:MISTAKES]
    assert [record["id"] for record in drawn["photos"]] == [f"id{row:03d}" for row in worst]
    first = drawn["photos"][0]
    assert first == {"id": f"id{worst[0]:03d}", "breed": "abcde"[labels[worst[0]]],
                     "p_breed": probabilities[worst[0], labels[worst[0]]],
                     "predicted": "abcde"[probabilities[worst[0]].argmax()], "p_predicted": probabilities[worst[0]].max()}
    sheet = cv2.imread(str(tmp_path / "m.jpg"))
    assert drawn["file"] == "m.jpg" and sheet.shape == (HEADER + 4 * CELL_HEIGHT, COLUMNS * CELL_WIDTH, 3)
    assert_cells_show(sheet, colours[worst])


def test_a_run_with_almost_nothing_wrong_shows_the_highest_losses_anyway(tmp_path):
    """One mistake among 30: the sheet shows 24 photos, the one mistaken first; with 10 photos, the 10, in 2 rows."""
    probabilities, labels = predictions(30, 3, wrong=[7])
    thumbnails, _ = flat_photos(30)
    drawn = draw_mistakes(photos_of(probabilities, labels, list("abc"), thumbnails), "tta", tmp_path / "m.jpg")
    assert len(drawn["photos"]) == MISTAKES and drawn["photos"][0]["id"] == "id007"
    assert [record["predicted"] != record["breed"] for record in drawn["photos"]] == [True] + [False] * 23
    few = draw_mistakes(photos_of(probabilities[:10], labels[:10], list("abc"), thumbnails), "tta", tmp_path / "f.jpg")
    assert len(few["photos"]) == 10
    assert cv2.imread(str(tmp_path / "f.jpg")).shape == (HEADER + 2 * CELL_HEIGHT, COLUMNS * CELL_WIDTH, 3)


def test_unreadable_photos_are_left_out_and_the_next_shown(tmp_path):
    probabilities, labels = predictions(40, 4, wrong=range(10))
    thumbnails, colours = flat_photos(40)
    loss = -np.log(probabilities[np.arange(40), labels])
    order = np.argsort(-loss)
    unreadable = set(order[:3].tolist())
    drawn = draw_mistakes(photos_of(probabilities, labels, list("abcd"), thumbnails, unreadable), "tta",
                          tmp_path / "m.jpg")
    assert [record["id"] for record in drawn["photos"]] == [f"id{row:03d}" for row in order[3:3 + MISTAKES]]
    assert_cells_show(cv2.imread(str(tmp_path / "m.jpg")), colours[order[3:3 + MISTAKES]])


@pytest.mark.parametrize("name", [LONG, "x" * 40])
def test_a_breed_name_of_40_characters_wraps_or_is_cut_legibly_within_its_cell(name):
    """Two lines at most, each within the cell, broken between words; what does not fit is cut and marked "..."."""
    text = f"pred 0.93 {pictures.breed_name(name)}"
    lines = fit(text, THUMBNAIL * SCALE, 2)
    assert len(lines) == 2
    assert all(cv2.getTextSize(line, pictures.FONT, pictures.FONT_SCALE, 1)[0][0] <= THUMBNAIL * SCALE for line in lines)
    shown = " ".join(lines)
    assert shown == text or (shown.endswith("...") and text.startswith(shown[:-3]))
    assert len(shown) >= 30 and lines[0].startswith("pred 0.93")


def test_confused_sheet_shows_each_pairs_breeds_side_by_side_most_mistaken_first(tmp_path):
    classes = ["akita", LONG, "collie"]
    probabilities, labels = predictions(14, 3, wrong=[0, 1, 4, 7])
    thumbnails, colours = flat_photos(14)
    photos = photos_of(probabilities, labels, classes, thumbnails)
    confused = confused_pairs(probabilities, labels, classes)
    drawn = draw_confused(photos, confused, "tta", tmp_path / "c.jpg")
    assert [pair["breeds"] for pair in drawn["pairs"]] == [pair["breeds"] for pair in confused]
    cells = []
    for pair in drawn["pairs"]:
        first, second = (classes.index(breed) for breed in pair["breeds"])
        for breed, other, ids in ((first, second, pair["ids"][0]), (second, first, pair["ids"][1])):
            rows = np.flatnonzero(labels == breed)
            expected = rows[np.argsort(-probabilities[rows, other])][:PER_SIDE]
            assert ids == [f"id{row:03d}" for row in expected]
            cells += [colours[row] for row in expected] + [None] * (PER_SIDE - len(expected))
    sheet = cv2.imread(str(tmp_path / "c.jpg"))
    assert sheet.shape == (HEADER + len(confused) * CELL_HEIGHT, COLUMNS * CELL_WIDTH, 3)
    assert_cells_show(sheet, cells)
    assert draw_confused(photos, [], "tta", tmp_path / "none.jpg") is None and not (tmp_path / "none.jpg").exists()


def test_calibration_bins_count_every_row_and_hold_its_accuracy(tmp_path):
    probabilities, labels = predictions(500, 10, wrong=range(0, 500, 7))
    drawn = draw_calibration(probabilities, labels, "tta", 0.4321, tmp_path / "cal.png")
    confidence, right = probabilities.max(axis=1), probabilities.argmax(axis=1) == labels
    assert sum(row["count"] for row in drawn["bins"]) == 500
    for row in drawn["bins"]:
        inside = (confidence >= row["from"]) & ((confidence < row["to"]) | (row["to"] == 1))
        assert row["count"] == inside.sum() and row["accuracy"] == pytest.approx(right[inside].mean())
        assert row["confidence"] == pytest.approx(confidence[inside].mean())
    error = sum(row["count"] * abs(row["accuracy"] - row["confidence"]) for row in drawn["bins"]) / 500
    assert drawn["expected_calibration_error"] == pytest.approx(error) and drawn["log_loss"] == 0.4321
    assert cv2.imread(str(tmp_path / "cal.png")).shape == (480, 640, 3)


def competition_on_disk(tmp_path, n, classes):
    """A competition folder whose train/ holds `n` flat-coloured JPEGs: (Competition, their colours)."""
    (tmp_path / "train").mkdir()
    thumbnails, colours = flat_photos(n)
    for row in range(n):
        cv2.imwrite(str(tmp_path / "train" / f"id{row:03d}.jpg"), cv2.resize(thumbnails[row], (300, 200))[..., ::-1])
    labels = np.arange(n) % len(classes)
    return Competition(tmp_path, classes, [f"id{row:03d}" for row in range(n)], labels, []), colours


def test_a_run_without_thumbnails_decodes_the_few_photos_it_shows_and_leaves_out_unreadable_ones(tmp_path, capsys):
    """A heads-only run: the photos come from train/, one deleted; then none there: one warning, no sheets (the old
    ones removed), the calibration still drawn."""
    competition, colours = competition_on_disk(tmp_path, 30, ["akita", "beagle", "collie"])
    probabilities, labels = predictions(30, 3, wrong=[2, 5])
    chosen = SimpleNamespace(option=SimpleNamespace(name="tta"), oof=probabilities, log_loss=0.3)
    readable = np.arange(30)
    worst = np.argsort(np.log(probabilities[readable, labels]))  # the highest log loss first
    (tmp_path / "train" / f"id{worst[0]:03d}.jpg").unlink()
    out = tmp_path / "out"
    out.mkdir()
    confused = confused_pairs(probabilities, labels, competition.classes)
    drawn = draw_pictures(chosen, labels, competition, readable, None, confused, out)
    assert [record["id"] for record in drawn["mistakes"]["photos"]] == [f"id{row:03d}" for row in worst[1:25]]
    assert_cells_show(cv2.imread(str(out / "mistakes.jpg")), colours[worst[1:25]])
    assert drawn["confused"]["pairs"] and (out / "confused.jpg").is_file()

    for path in (tmp_path / "train").iterdir():
        path.unlink()
    capsys.readouterr()
    drawn = draw_pictures(chosen, labels, competition, readable, None, confused, out)
    assert warnings_in(capsys.readouterr().err) == [
        f"warning: {tmp_path / 'train'}: no training photo could be read; mistakes.jpg and confused.jpg not drawn"
    ]
    assert drawn["mistakes"] is None and drawn["confused"] is None and drawn["calibration"]["file"] == "calibration.png"
    assert sorted(path.name for path in out.iterdir()) == ["calibration.png"]


def experiment(action, cv="", public=""):
    return {"action": action, "cv_log_loss": cv, "public_score": public}


def test_experiments_png_shows_each_submissions_cv_and_public_score_in_order(tmp_path):
    rows = [experiment("push"), experiment("submit", "0.30000", "0.32100"), experiment("push"),
            experiment("submit", "0.25000", ""), experiment("submit", "0.21000", "0.26000"),
            experiment("submit", "not a number", "0.3")]
    assert draw_experiments(rows, tmp_path / "experiments.png") == [
        (1, 0.3, 0.321), (2, 0.25, None), (3, 0.21, 0.26), (4, None, 0.3)
    ]
    picture = cv2.imread(str(tmp_path / "experiments.png"))
    assert picture.shape == (450, 1100, 3) and picture.std() > 10


def test_an_experiments_log_without_scores_draws_nothing_and_removes_an_old_picture(tmp_path):
    (tmp_path / "experiments.png").write_bytes(b"an old picture")
    rows = [experiment("push"), experiment("submit", "0.30000")]
    assert draw_experiments(rows, tmp_path / "experiments.png") == []
    assert draw_experiments([], tmp_path / "experiments.png") == []
    assert not (tmp_path / "experiments.png").exists()
