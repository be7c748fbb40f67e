import argparse
import dataclasses
import os
import subprocess
import sys

import pytest

from kaggle_src.config import (
    DRY_RUN_IMAGE_SIZE, Config, InputError, add_config_arguments, config_from_arguments, flags, make_config,
    parse_value, warn_unknown_arguments,
)
from tests.conftest import REPO, readme_table


def parse(argv):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    return config_from_arguments(parser.parse_args(argv))


def test_defaults_are_the_seed_method_but_for_the_image_size_chosen_on_real_photos():
    config = Config()
    assert config.backbones == ("xception", "inception_v3")
    assert (config.image_size, config.n_folds, config.flips, config.max_epochs) == (448, 5, True, 50)
    assert config.input_sizes == {"xception": 448, "inception_v3": 448}  # 1.5 times their native 299
    assert config.views == ("original", "flipped")


def test_dry_run_uses_small_images_unless_a_size_is_given():
    assert make_config(dry_run=True).image_size == DRY_RUN_IMAGE_SIZE
    assert make_config(dry_run=True, image_size=128).image_size == 128
    assert make_config().image_size == 448
    assert make_config(backbones=("efficientnet_b0",)).image_size == 336  # 1.5 times its native 224


def test_heads_standardise_unless_told_not_to_as_the_seeds_did_not():
    assert make_config().standardise and make_config(dry_run=True).standardise
    assert not make_config(standardise=False).standardise
    assert parse(["--dry-run", "--no-standardise"]).standardise is False


def test_flags_override_defaults():
    config = parse(["--n-folds", "3", "--no-flips", "--backbones", "xception", "--dropout", "0.25", "--dry-run"])
    assert (config.n_folds, config.flips, config.backbones, config.dropout) == (3, False, ("xception",), 0.25)
    assert config.views == ("original",)
    assert config.image_size == DRY_RUN_IMAGE_SIZE


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"backbones": ("resnet9000",)}, "backbones='resnet9000'"),
        ({"n_folds": 1}, "n_folds=1: expected at least 2"),
        ({"members_per_head": 0}, "members_per_head=0: expected at least 1"),
        ({"image_size": 72}, "image_size=72: expected at least 75"),
        ({"dropout": 1.0}, "dropout=1.0"),
        ({"image_size": "299"}, "image_size='299': expected an integer"),
        ({"flips": 1}, "flips=1: expected true or false"),
    ],
)
def test_bad_values_are_rejected_with_the_value_named(overrides, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_config(**overrides)


def test_image_size_minimum_follows_the_chosen_backbones():
    assert make_config(backbones=("xception",), image_size=71).image_size == 71


def test_parse_value_checks_key_and_type():
    assert parse_value("flips", "false") is False
    assert parse_value("backbones", "xception, inception_v3") == ("xception", "inception_v3")
    assert parse_value("learning_rate", "3e-4") == 3e-4
    with pytest.raises(InputError, match="config key 'epochs'"):
        parse_value("epochs", "3")
    with pytest.raises(InputError, match="n_folds='five': expected an integer"):
        parse_value("n_folds", "five")


def test_every_registered_backbone_names_a_keras_application():
    import keras

    from kaggle_src.backbones import BACKBONES

    missing = [entry.constructor for entry in BACKBONES.values() if not hasattr(keras.applications, entry.constructor)]
    assert missing == []


def test_every_setting_has_its_meaning_and_every_valued_flag_a_metavar():
    for field in dataclasses.fields(Config):
        assert field.metadata["help"], field.name
        assert (field.metadata["metavar"] is None) == (field.type is bool), field.name


def readme_configuration_table():
    """(flag, default, meaning) of each row of the README's Configuration table, the cells' backticks dropped."""
    return [tuple(row) for row in readme_table("Configuration", "`--")]


def test_the_readme_configuration_table_is_every_flag_as_help_gives_it():
    expected = []
    for name, (metavar, default, meaning) in flags().items():
        flag = "--" + name.replace("_", "-")
        shown = f"`{flag}` / `--no-{flag[2:]}`" if metavar is None else f"`{flag} {metavar}`"
        expected.append((shown, default, meaning))
    table = readme_configuration_table()
    assert [(flag, default.replace("`", ""), meaning.replace("`", "")) for flag, default, meaning in table] == expected


def test_help_gives_each_flag_its_meaning_default_and_choices_and_the_files_a_run_writes():
    result = subprocess.run(
        [sys.executable, "-m", "kaggle_src", "--help"], capture_output=True, text=True, cwd=REPO,
        env={**os.environ, "COLUMNS": "1000"},  # no wrapping: each flag's help on one line
    )
    assert (result.returncode, result.stderr) == (0, "")
    for name, (metavar, default, meaning) in flags().items():
        flag = "--" + name.replace("_", "-")
        usage = f"{flag}, --no-{flag[2:]}" if metavar is None else f"{flag} {metavar}"
        assert f"  {usage}" in result.stdout and f" {meaning} (default: {default})\n" in result.stdout, name
    help_of = {name: f"{meaning} (default: {default})" for name, (_, default, meaning) in flags().items()}
    assert f"{DRY_RUN_IMAGE_SIZE} with --dry-run" in help_of["image_size"]
    assert "--no-standardise" in help_of["standardise"]
    assert "one of auto, float32, float16, bfloat16" in help_of["precision"]
    assert "one of auto, on, off" in help_of["xla"]
    assert "xception, inception_v3, inception_resnet_v2" in help_of["backbones"]
    assert "0: the most that fits a 16 GB T4 per GPU" in help_of["extract_batch_size"] and "-1: one per core" in help_of["n_jobs"]
    epilog = result.stdout.split("files a run writes to --output-dir:\n")[1]
    for name in ("submission.csv", "oof_predictions.csv", "test_predictions/<option>.csv", "metrics.json", "report.md",
                 "features.npz"):
        assert f"  {name}" in epilog
    assert "Arguments it does not know are ignored" in epilog


def test_unknown_arguments_are_warned_of_on_stderr_with_the_closest_flag(capsys):
    warn_unknown_arguments(["--n-fold", "3", "--no-flip", "-f", "/tmp/kernel.json", "--n-job=-1", "--seedling", "-1"])
    assert capsys.readouterr() == ("", "\n".join([
        "warning: argument --n-fold 3: unknown (did you mean --n-folds?); ignored",
        "warning: argument --no-flip: unknown (did you mean --no-flips?); ignored",
        "warning: argument -f /tmp/kernel.json: unknown; ignored",
        "warning: argument --n-job=-1: unknown (did you mean --n-jobs?); ignored",
        "warning: argument --seedling -1: unknown (did you mean --seed?); ignored",
    ]) + "\n")


def test_pseudo_labels_is_one_of_its_modes():
    assert make_config(pseudo_labels="hard").pseudo_labels == "hard"
    with pytest.raises(InputError) as error:
        make_config(pseudo_labels="yes")
    assert str(error.value) == "config pseudo_labels='yes': expected one of off, soft, hard"


def test_the_ensemble_setting_names_an_option_these_settings_score():
    assert make_config(ensemble="tta").ensemble == "tta" and make_config().ensemble == ""
    every = "heads_mean, geometric, tta, tta_geometric, tta_geometric_temperature, logistic, heads_logistic, blend"
    for overrides, scored in [
        ({"ensemble": "best"}, every),
        ({"ensemble": "tta", "flips": False}, "heads_mean, geometric, logistic, heads_logistic, blend"),
        ({"ensemble": "heads_logistic", "logistic": False},
         "heads_mean, geometric, tta, tta_geometric, tta_geometric_temperature, blend"),
        ({"ensemble": "logistic", "logistic": False},
         "heads_mean, geometric, tta, tta_geometric, tta_geometric_temperature, blend"),
    ]:
        with pytest.raises(InputError) as error:
            make_config(**overrides)
        assert str(error.value) == (
            f"config ensemble={overrides['ensemble']!r}: expected one of the options these settings score: {scored}"
        )


def test_config_imports_neither_sklearn_nor_tensorflow():
    """build_kernel.py and every check at the door import config.py: it must stay quick to import."""
    entry = "import sys, kaggle_src.config; print(sorted({'sklearn', 'tensorflow', 'keras'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", entry], capture_output=True, text=True, cwd=REPO)
    assert result.stdout == "[]\n", result.stderr


def test_a_smoke_run_needs_enough_images_per_breed_for_the_folds_and_extracts():
    assert make_config(smoke=5).smoke == 5 and make_config().smoke == 0
    for overrides, message in [
        ({"smoke": 3}, "config smoke=3: expected 0 (off) or at least n_folds=5"),
        ({"smoke": -1}, "config smoke=-1: expected 0 (off) or at least n_folds=5"),
        ({"smoke": 5, "features": "run1"}, "config smoke=5: expected no features folder (a smoke run tests extraction)"),
    ]:
        with pytest.raises(InputError) as error:
            make_config(**overrides)
        assert str(error.value) == message
