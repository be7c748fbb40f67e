import numpy as np

from kaggle_src.report import confused_pairs, report_markdown, summary_line

CLASSES = ["akita", "beagle", "collie", "dingo"]


def test_confused_pairs_sum_both_directions_and_come_most_first():
    truth_and_guess = [(0, 1)] * 3 + [(1, 0)] * 2 + [(2, 3)] * 4 + [(0, 2)] + [(0, 0), (1, 1), (2, 2), (3, 3)] * 5
    labels = np.array([truth for truth, _ in truth_and_guess])
    probabilities = np.eye(4)[[guess for _, guess in truth_and_guess]] * 0.7 + 0.075
    pairs = confused_pairs(probabilities, labels, CLASSES)
    assert pairs == [
        {"breeds": ["akita", "beagle"], "count": 5, "first_as_second": 3, "second_as_first": 2},
        {"breeds": ["collie", "dingo"], "count": 4, "first_as_second": 4, "second_as_first": 0},
        {"breeds": ["akita", "collie"], "count": 1, "first_as_second": 1, "second_as_first": 0},
    ]
    assert confused_pairs(probabilities, labels, CLASSES, top=2) == pairs[:2]
    assert confused_pairs(np.eye(4)[labels], labels, CLASSES) == []


def metrics(confused):
    return {
        "options": {
            "heads_mean": {"log_loss": 0.25, "accuracy": 0.93},
            "tta": {"log_loss": 0.2, "accuracy": 0.94},
            "tta_geometric_temperature": {"log_loss": 0.22, "accuracy": 0.935, "temperature": 0.8},
        },
        "chosen": {"option": "tta", "best_out_of_fold": "tta", "set_by_ensemble": False,
                   "improvement_over_heads_mean": 0.05},
        "confused": confused,
        "counts": {"train_images": 10222, "folds": 5},
        "chance_log_loss": 4.787,
        "seconds": {"extract_features": 300.0, "train_heads": 60.5, "total": 400.3},
        "pictures": {
            "mistakes": {"file": "mistakes.jpg", "photos": [
                {"id": "a1", "breed": "akita", "p_breed": 0.01, "predicted": "beagle", "p_predicted": 0.9},
                {"id": "c1", "breed": "collie", "p_breed": 0.4, "predicted": "collie", "p_predicted": 0.4},
            ]},
            "confused": {"file": "confused.jpg", "pairs": [{"breeds": ["akita", "beagle"], "ids": [["a1"], ["b1"]]}]},
            "calibration": {"file": "calibration.png", "expected_calibration_error": 0.0123},
        },
    }


def test_report_holds_the_table_the_winner_the_confused_pairs_and_the_times():
    pair = {"breeds": ["akita", "beagle"], "count": 5, "first_as_second": 3, "second_as_first": 2}
    report = report_markdown(metrics([pair]))
    assert summary_line(metrics([pair])) == "submitted tta: out-of-fold log loss 0.2000, accuracy 0.940; 400 s"
    assert report.startswith("# submitted tta: out-of-fold log loss 0.2000, accuracy 0.940; 400 s\n")
    assert "| heads_mean | each head on its own view, arithmetic mean (the seed's) | 0.2500 | 0.9300 |" in report
    assert "| **tta** (submitted) | each head on both views, arithmetic mean | 0.2000 | 0.9400 |" in report
    assert "temperature-scaled (T = 0.800) | 0.2200 | 0.9350 |" in report
    assert ("Submitted: **tta**, out-of-fold log loss 0.2000, 0.0500 (20.0%) below heads_mean, the seed's heads "
            "(0.2500)") in report
    assert "| akita / beagle | 5 | 3 | 2 |" in report
    assert "| train_heads | 60.5 |" in report and "| total | 400.3 |" in report
    assert "None: every out-of-fold prediction's top breed is the true one." in report_markdown(metrics([]))


def test_an_option_set_by_ensemble_is_reported_as_such_with_its_gain_or_loss():
    set_by_ensemble = metrics([])
    set_by_ensemble["chosen"] = {"option": "heads_mean", "best_out_of_fold": "tta", "set_by_ensemble": True,
                                 "improvement_over_heads_mean": 0.0}
    assert "Submitted: **heads_mean** (set by --ensemble; the best out of fold is tta), out-of-fold log loss " \
        "0.2500, 0.0000 (0.0%) below heads_mean" in report_markdown(set_by_ensemble)
    set_by_ensemble["chosen"] = {"option": "tta_geometric_temperature", "best_out_of_fold": "tta",
                                 "set_by_ensemble": True, "improvement_over_heads_mean": -0.03}
    report = report_markdown(set_by_ensemble)
    assert "out-of-fold log loss 0.2200, 0.0300 (12.0%) above heads_mean, the seed's heads (0.2500)" in report


def test_an_option_within_the_noise_of_the_best_is_reported_as_the_preferred_such():
    within_noise = metrics([])
    within_noise["chosen"] = {"option": "heads_mean", "best_out_of_fold": "tta", "set_by_ensemble": False,
                              "improvement_over_heads_mean": 0.0}
    assert "Submitted: **heads_mean** (the preferred fixed recipe within 1 standard error of the best one out of " \
        "fold; the lowest of all: tta), out-of-fold log loss 0.2500" in report_markdown(within_noise)


def test_report_links_each_picture_after_a_line_on_what_it_shows():
    report = report_markdown(metrics([]))
    assert ("The 2 training photos of the highest out-of-fold log loss, 1 mistaken: the label or the model? "
            "![mistakes](mistakes.jpg)") in report
    assert "The 1 most-confused breed pairs, the photos of each most taken for the other first: " \
        "![confused](confused.jpg)" in report
    assert "(expected calibration error 0.012): ![calibration](calibration.png)" in report
    unconfused = metrics([])
    unconfused["pictures"]["confused"] = None
    assert "No sheet of confused breeds: none was taken for another." in report_markdown(unconfused)
    unreadable = metrics([])
    unreadable["pictures"].update(mistakes=None, confused=None)
    report = report_markdown(unreadable)
    assert "No photo sheets: no training photo could be read." in report and "![calibration]" in report
    assert "mistakes.jpg" not in report and "No sheet of confused" not in report
