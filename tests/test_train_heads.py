import math

import numpy as np
import pytest

from sklearn.linear_model import LogisticRegression

from kaggle_src.config import make_config
from kaggle_src.ensembles import score_predictions
from kaggle_src import train_heads as train_heads_module
from kaggle_src.train_heads import (
    C_LADDER, C_START, LOGISTIC_MAX_ITERATIONS, LOGISTIC_TOLERANCE, choose_by_cross_fitting, make_folds, search_c, train_heads,
    train_logistic,
)


def test_folds_are_stratified_disjoint_and_reproducible():
    labels = np.repeat(np.arange(4), [10, 15, 20, 25])
    folds = make_folds(labels, make_config(n_folds=5, seed=3))
    validation = np.concatenate([val for _, val in folds])
    assert sorted(validation) == list(range(len(labels)))  # each sample validated exactly once
    for train, val in folds:
        assert not set(train) & set(val)
        assert (np.bincount(labels[val], minlength=4) == [2, 3, 4, 5]).all()
    again = make_folds(labels, make_config(n_folds=5, seed=3))
    assert all((a[1] == b[1]).all() for a, b in zip(folds, again))
    other = make_folds(labels, make_config(n_folds=5, seed=4))
    assert any((a[1] != b[1]).any() for a, b in zip(folds, other))


def separable(n_per_class=20, n_classes=3, seed=0):
    """Labels and two-view features (n, 2, 16) of well-separated classes; the second view at a tiny scale."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), n_per_class)
    centres = rng.normal(0, 1, (n_classes, 16))
    features = np.stack([centres[labels] + rng.normal(0, 0.3, (len(labels), 16))] * 2, axis=1).astype(np.float32)
    features[:, 1] *= 1e-5  # tiny-scale view, as from random-init backbones: standardisation must cope
    return features, labels


def test_heads_learn_separable_features_and_fill_every_out_of_fold_row():
    features, labels = separable()
    config = make_config(n_folds=3, max_epochs=40, patience=40, learning_rate=0.02, standardise=True)
    heads, oof = train_heads(features, labels, make_folds(labels, config), 3, config)
    assert [(head.fold, head.view) for head in heads] == [(f, v) for f in range(3) for v in range(2)]
    assert oof.shape == (2, 2, 60, 3)  # (head views, views, rows, classes)
    np.testing.assert_allclose(oof.sum(axis=-1), 1, rtol=1e-5)
    for view in range(2):
        assert score_predictions(oof[view, view], labels, 3)["log_loss"] < 0.5 * math.log(3)
    folds = make_folds(labels, config)
    for head in heads:  # the other view's out-of-fold rows are this head's predictions on that view
        rows = folds[head.fold][1]
        np.testing.assert_allclose(oof[head.view, 1 - head.view, rows], head.predict(features[rows, 1 - head.view]))


def test_without_standardise_heads_see_the_features_as_they_are_like_the_seeds():
    features, labels = separable()
    config = make_config(n_folds=3, max_epochs=40, patience=40, learning_rate=0.02, standardise=False)
    heads, oof = train_heads(features, labels, make_folds(labels, config), 3, config)
    for head in heads:
        assert not head.mean.any() and (head.scale == 1).all()
    assert score_predictions(oof[0, 0], labels, 3)["log_loss"] < 0.5 * math.log(3)  # the unit-scale view learns
    assert score_predictions(oof[1, 1], labels, 3)["log_loss"] > 0.9 * math.log(3)  # the 1e-5-scale view cannot


def two_alike_views(n_per_class=20, seed=0):
    """separable()'s labels, with a second view like the first (as a flip of a dog is): the first view plus noise."""
    features, labels = separable(n_per_class, seed=seed)
    features[:, 1] = features[:, 0] + np.random.default_rng(seed + 1).normal(0, 0.3, features[:, 0].shape)
    return features, labels


def logistic_reference(features, labels, train, c):
    """scikit-learn's LogisticRegression at C=`c` and our tolerance, cold, on the standardised rows of both views of `train`; and
    the standardisation, for applying it."""
    rows = features[train].reshape(-1, features.shape[-1])
    mean, std = rows.mean(axis=0), rows.std(axis=0)
    model = LogisticRegression(C=c, tol=LOGISTIC_TOLERANCE, max_iter=LOGISTIC_MAX_ITERATIONS)
    return model.fit((rows - mean) / std, np.repeat(labels[train], 2)), mean, std


def test_logistic_regressions_fit_every_view_and_take_the_c_that_the_other_folds_validate():
    features, labels = two_alike_views()
    folds = make_folds(labels, make_config(n_folds=3, seed=5))
    heads, oof = train_logistic(features, labels, folds, 3, make_config())
    assert oof.shape == (2, 2, 60, 3)  # a regression per fold, applied to each view as a head of that view
    assert [(head.fold, head.view) for head in heads] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    predictions, losses = {}, {}  # C: per fold, the reference's predictions on each view, and their log loss

    def reference_loss(c):
        for fold, (train, validation) in enumerate(folds):
            model, mean, std = logistic_reference(features, labels, train, c)
            predictions[c, fold] = [model.predict_proba((features[validation, view] - mean) / std) for view in (0, 1)]
            losses[c, fold] = np.mean([score_predictions(p, labels[validation], 3)["log_loss"]
                                       for p in predictions[c, fold]])
        return sum(losses[c, fold] for fold in range(3))

    tried = search_c(reference_loss)
    assert len(tried) >= 3  # the search went past the start and its neighbour on this data
    table = np.array([[losses[c, fold] for c in tried] for fold in range(3)])
    for fold, (_, validation) in enumerate(folds):
        choice = tried[int((table.sum(axis=0) - table[fold]).argmin())]  # never the fold's own validation loss
        for view in (0, 1):
            np.testing.assert_allclose(oof[view, view, validation], predictions[choice, fold][view], atol=2e-3)
    best = tried[int(table.sum(axis=0).argmin())]
    for head in heads:
        reference, mean, std = logistic_reference(features, labels, folds[head.fold][0], best)
        expected = reference.predict_proba((features[:, head.view] - mean) / std)
        np.testing.assert_allclose(head.predict(features[:, head.view]), expected, atol=2e-3)
        assert 1 <= head.epochs <= LOGISTIC_MAX_ITERATIONS * len(tried)  # lbfgs iterations along the path to its C


@pytest.mark.parametrize("lowest, expected", [
    (1.0, [0.3, 1.0, 3.0, 10.0, 30.0]),  # down from the start, until one C past the lowest
    (30.0, [10.0, 30.0, 100.0]),  # up
    (10.0, [3.0, 10.0, 30.0]),  # the start itself
    (1e4, [10.0, 30.0, 100.0, 300.0, 1000.0]),  # to the ladder's end
])
def test_the_search_for_c_walks_the_ladder_downhill_from_its_start_and_fits_each_c_once(lowest, expected):
    calls = []

    def validation_loss(c):
        calls.append(c)
        return abs(math.log(c / lowest))

    assert search_c(validation_loss) == expected
    assert sorted(calls) == expected and calls[:2] == [C_START, C_LADDER[C_LADDER.index(C_START) + 1]]


def test_each_fold_takes_the_candidate_the_other_folds_validate_best():
    losses = np.array([[0.10, 0.50], [0.40, 0.20], [0.45, 0.30]])  # candidate 0 wins over all folds: 0.95 to 1.00
    assert choose_by_cross_fitting(losses) == ([1, 0, 0], 0)  # fold 0's own 0.10 does not count for fold 0


def test_logistic_regression_keeps_every_class_column_with_two_classes_or_one_absent(monkeypatch):
    monkeypatch.setattr(train_heads_module, "search_c", lambda validation_loss: [1.0, validation_loss(1.0)][:1])
    features, labels = two_alike_views(n_per_class=12)
    labels = np.where(labels == 1, 2, labels)  # classes 0 and 2 of 3 only
    folds = make_folds(labels, make_config(n_folds=3, seed=5))
    heads, oof = train_logistic(features, labels, folds, 3, make_config())
    np.testing.assert_allclose(oof[0, 0].sum(axis=1), 1, rtol=1e-5)
    assert (oof[0, 0][:, 1] == 0).all()
    train, validation = folds[0]
    reference, mean, std = logistic_reference(features, labels, train, 1.0)
    expected = reference.predict_proba((features[validation, 0] - mean) / std)
    np.testing.assert_allclose(oof[0, 0, validation][:, [0, 2]], expected, atol=2e-3)


def test_score_predictions_matches_kaggle_clipping():
    probabilities = np.array([[1.0, 0.0], [0.5, 0.5]])
    scores = score_predictions(probabilities, np.array([1, 0]), 2)
    assert math.isclose(scores["log_loss"], (-math.log(1e-15) - math.log(0.5)) / 2, rel_tol=1e-6)
    assert scores["accuracy"] == 0.5


def test_each_head_stops_on_its_own_validation_loss():
    """Heads on a learnable view train longer than heads on a pure-noise view, which overfit and stop early."""
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), 30)
    centres = rng.normal(0, 1, (3, 16))
    learnable = centres[labels] + rng.normal(0, 0.3, (90, 16))
    noise = rng.normal(0, 1, (90, 16))
    features = np.stack([learnable, noise], axis=1).astype(np.float32)
    config = make_config(n_folds=3, max_epochs=60, patience=3, learning_rate=0.03, head_batch_size=16)
    heads, oof = train_heads(features, labels, make_folds(labels, config), 3, config)
    epochs = {view: [head.epochs for head in heads if head.view == view] for view in (0, 1)}
    assert np.mean(epochs[1]) < 0.5 * np.mean(epochs[0])
    assert len(set(epochs[0] + epochs[1])) > 2  # each stopped at its own epoch
    assert all(config.patience + 1 <= count <= config.max_epochs for count in epochs[0] + epochs[1])
    assert score_predictions(oof[0, 0], labels, 3)["log_loss"] < score_predictions(oof[1, 1], labels, 3)["log_loss"]
