import dataclasses
import hashlib
import shutil

import numpy as np
import pandas as pd
import pytest

from kaggle_src.backbones import BACKBONES
from kaggle_src.config import InputError, make_config
from kaggle_src.find_inputs import find_inputs, prepare_output_dir, read_competition
from tests.conftest import INPUT_STUB

XCEPTION_FILE = BACKBONES["xception"].weights_file
INCEPTION_FILE = BACKBONES["inception_v3"].weights_file


def copy_competition(root, nesting=("dog-breed-identification",)):
    """The stub's two CSVs and (empty) image folders under `root`/`nesting`."""
    target = root.joinpath(*nesting)
    for split in ("train", "test"):
        (target / split).mkdir(parents=True)
    for name in ("labels.csv", "sample_submission.csv"):
        shutil.copy(INPUT_STUB / "dog-breed-identification" / name, target / name)
    return target


@pytest.mark.parametrize("nesting", [("dog-breed-identification",), ("competitions", "dog-breed-identification", "v2")])
def test_competition_and_weights_are_found_at_any_depth(tmp_path, nesting):
    competition = copy_competition(tmp_path, nesting)
    (tmp_path / "keras-pretrained-models" / "deep").mkdir(parents=True)
    (tmp_path / "keras-pretrained-models" / XCEPTION_FILE).write_bytes(b"")
    (tmp_path / "keras-pretrained-models" / "deep" / INCEPTION_FILE).write_bytes(b"")
    found, weights = find_inputs(tmp_path, make_config())
    assert found == competition
    assert weights == {
        "xception": tmp_path / "keras-pretrained-models" / XCEPTION_FILE,
        "inception_v3": tmp_path / "keras-pretrained-models" / "deep" / INCEPTION_FILE,
    }


def test_missing_weights_name_the_file_and_the_dataset(tmp_path):
    copy_competition(tmp_path)
    (tmp_path / XCEPTION_FILE).write_bytes(b"")
    with pytest.raises(InputError) as error:
        find_inputs(tmp_path, make_config())
    assert INCEPTION_FILE in str(error.value)
    assert "gaborfodor/keras-pretrained-models" in str(error.value)


def test_dry_run_needs_no_weights(tmp_path):
    copy_competition(tmp_path)
    assert find_inputs(tmp_path, make_config(dry_run=True))[1] == {}


def test_no_competition_folder_is_one_clear_error(tmp_path):
    (tmp_path / "train.csv").write_text("id,breed\n")
    with pytest.raises(InputError, match="no folder holds both labels.csv and sample_submission.csv"):
        find_inputs(tmp_path, make_config(dry_run=True))


def test_classes_come_from_the_sample_header_in_its_order(tmp_path):
    competition = copy_competition(tmp_path)
    sample = pd.read_csv(competition / "sample_submission.csv")
    reordered = ["id"] + list(sample.columns[1:][::-1])
    sample[reordered].to_csv(competition / "sample_submission.csv", index=False)
    labels = pd.read_csv(competition / "labels.csv")
    read = read_competition(competition)
    assert read.classes == reordered[1:]
    assert read.test_ids == sample["id"].tolist()
    assert [read.classes[index] for index in read.train_labels] == labels["breed"].tolist()
    assert read.image_paths("train")[0] == competition / "train" / f"{labels['id'][0]}.jpg"


def test_a_breed_missing_from_the_sample_columns_is_named(tmp_path):
    competition = copy_competition(tmp_path)
    labels = pd.read_csv(competition / "labels.csv")
    labels.loc[3, "breed"] = "dingo_deluxe"
    labels.to_csv(competition / "labels.csv", index=False)
    with pytest.raises(InputError, match="labels.csv: breed 'dingo_deluxe' is not a column"):
        read_competition(competition)


def test_duplicate_and_missing_columns_are_named(tmp_path):
    competition = copy_competition(tmp_path)
    sample = pd.read_csv(competition / "sample_submission.csv")
    pd.concat([sample, sample.iloc[[0]]]).to_csv(competition / "sample_submission.csv", index=False)
    with pytest.raises(InputError, match=f"sample_submission.csv: id '{sample['id'][0]}' appears more than once"):
        read_competition(competition)
    sample[["id"]].to_csv(competition / "sample_submission.csv", index=False)
    with pytest.raises(InputError, match="sample_submission.csv: expected columns id, then one per breed"):
        read_competition(competition)
    pd.DataFrame({"id": ["a"], "dog": ["b"]}).to_csv(competition / "labels.csv", index=False)
    with pytest.raises(InputError, match="labels.csv: missing column 'breed'"):
        read_competition(competition)


@pytest.mark.parametrize(
    "missing, present", [("labels.csv", "sample_submission.csv"), ("sample_submission.csv", "labels.csv")]
)
def test_a_csv_missing_beside_the_other_is_named(tmp_path, missing, present):
    competition = copy_competition(tmp_path)
    (competition / missing).unlink()
    with pytest.raises(InputError) as error:
        find_inputs(tmp_path, make_config(dry_run=True))
    assert str(error.value) == f"{competition / missing}: file not found (beside {present})"


@pytest.mark.parametrize("name", ["labels.csv", "sample_submission.csv"])
@pytest.mark.parametrize(
    "text, message",
    [("", "not a readable CSV"), ("id,breed\n", "no rows"), ("id,breed\n,beagle\n", "data row 1 has no id")],
)
def test_an_empty_csv_or_a_blank_id_is_named(tmp_path, name, text, message):
    competition = copy_competition(tmp_path)
    (competition / name).write_text(text)
    with pytest.raises(InputError, match=f"{name}: {message}"):
        read_competition(competition)


def test_a_bom_crlf_line_ends_and_spaces_around_cells_are_read_like_a_clean_csv(tmp_path):
    clean = read_competition(copy_competition(tmp_path / "clean"))
    quirky = copy_competition(tmp_path / "quirky")
    for name in ("labels.csv", "sample_submission.csv"):
        table = pd.read_csv(quirky / name, dtype=str)
        table["id"] = "  " + table["id"] + " "
        if "breed" in table:
            table["breed"] = " " + table["breed"] + "\t"
        (quirky / name).write_bytes(b"\xef\xbb\xbf" + table.to_csv(index=False, lineterminator="\r\n").encode())
    read = read_competition(quirky)
    assert (read.classes, read.train_ids, read.test_ids) == (clean.classes, clean.train_ids, clean.test_ids)
    assert (read.train_labels == clean.train_labels).all()


def test_a_label_id_twice_with_one_breed_warns_and_with_two_breeds_stops(tmp_path, capsys):
    competition = copy_competition(tmp_path)
    labels = pd.read_csv(competition / "labels.csv")
    pd.concat([labels, labels.iloc[[4]]]).to_csv(competition / "labels.csv", index=False)
    read = read_competition(competition)
    assert read.train_ids == labels["id"].tolist()
    assert capsys.readouterr().err == (
        f"warning: {competition / 'labels.csv'}: id {labels['id'][4]!r} listed more than once with the same breed; "
        "counted once\n"
    )
    other_breed = next(breed for breed in labels["breed"] if breed != labels["breed"][4])
    pd.concat([labels, labels.iloc[[4]].assign(breed=other_breed)]).to_csv(competition / "labels.csv", index=False)
    with pytest.raises(InputError) as error:
        read_competition(competition)
    assert str(error.value) == (
        f"{competition / 'labels.csv'}: id {labels['id'][4]!r} appears with different breeds "
        f"({labels['breed'][4]}, {other_breed})"
    )


@pytest.mark.parametrize("split", ["train", "test"])
def test_a_missing_image_folder_is_named(tmp_path, split):
    competition = copy_competition(tmp_path)
    (competition / split).rmdir()
    with pytest.raises(InputError, match=f"{competition / split}: folder not found"):
        read_competition(competition)


def test_labels_are_integer_indices(tmp_path):
    read = read_competition(copy_competition(tmp_path))
    assert read.train_labels.dtype == np.int64 and read.train_labels.max() < len(read.classes)


def test_output_dir_is_created_and_an_unwritable_one_is_refused(tmp_path):
    assert prepare_output_dir(tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="output dir .*file/out: cannot be written"):
        prepare_output_dir(tmp_path / "file" / "out")


def test_weights_unlike_the_file_keras_publishes_warn_but_are_used(tmp_path, capsys, monkeypatch):
    copy_competition(tmp_path)
    (tmp_path / XCEPTION_FILE).write_bytes(b"a copy that differs")
    (tmp_path / INCEPTION_FILE).write_bytes(b"")
    _, weights = find_inputs(tmp_path, make_config())
    assert set(weights) == {"xception", "inception_v3"}
    md5 = {"xception": hashlib.md5(b"a copy that differs").hexdigest(), "inception_v3": hashlib.md5(b"").hexdigest()}
    assert capsys.readouterr().err.splitlines() == [
        f"warning: {tmp_path / name}: md5 {md5[backbone]}, not the {BACKBONES[backbone].md5} that Keras publishes "
        f"for {name}; loading it anyway"
        for backbone, name in (("xception", XCEPTION_FILE), ("inception_v3", INCEPTION_FILE))
    ]
    for backbone in md5:
        monkeypatch.setitem(BACKBONES, backbone, dataclasses.replace(BACKBONES[backbone], md5=md5[backbone]))
    find_inputs(tmp_path, make_config())
    assert capsys.readouterr().err == ""
