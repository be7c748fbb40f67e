import math

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from kaggle_src import train_logistic as train_logistic_module
from kaggle_src.config import make_config
from kaggle_src.ensembles import score_predictions
from kaggle_src.train_heads import make_folds
from kaggle_src.train_logistic import (
    C_LADDER, C_START, LOGISTIC_MAX_ITERATIONS, LOGISTIC_TOLERANCE, choose_by_cross_fitting, search_c, train_logistic,
)
from tests.test_train_heads import separable


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
    assert [(head.fold, head.view) for head in heads] == [(0, 0), (0, 1)]  # for the test: one, fitted on every row
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
        reference, mean, std = logistic_reference(features, labels, np.arange(len(labels)), best)
        expected = reference.predict_proba((features[:, head.view] - mean) / std)
        np.testing.assert_allclose(head.predict(features[:, head.view]), expected, atol=2e-3)
        assert 1 <= head.epochs <= LOGISTIC_MAX_ITERATIONS  # the L-BFGS iterations of its one fit


def test_each_folds_regression_is_its_own_whatever_the_order_of_the_folds():
    """A fold started from another fold's fit would start from a model that saw its validation rows (and keep
    much of it where the loss is flat): then the order of the folds would change each fold's regression."""
    features, labels = two_alike_views()
    folds = make_folds(labels, make_config(n_folds=3, seed=5))
    forward, forward_oof = train_logistic(features, labels, folds, 3, make_config())
    backward, backward_oof = train_logistic(features, labels, folds[::-1], 3, make_config())
    np.testing.assert_allclose(forward_oof, backward_oof, atol=1e-9)
    for head in forward:  # the one fitted on every row starts from the folds' mean, summed in another order
        twin = next(other for other in backward if other.view == head.view)
        np.testing.assert_allclose(head.predict(features[:, head.view]), twin.predict(features[:, head.view]), atol=1e-5)


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


def test_a_feature_that_fires_on_one_image_does_not_blow_up_its_prediction():
    """Rare activations: each of 6 extra features is 0 but for rounding noise, except on one image. In the folds
    that do not train on that image, its deviation there would be millions of the rows' (STD_FLOOR bounds it), and
    so would its logits: every such image predicted at near-certainty, right or wrong."""
    features, labels = two_alike_views()
    rng = np.random.default_rng(3)
    rare = rng.normal(0, 1e-6, (60, 2, 6)).astype(np.float32)
    for column, row in enumerate(rng.choice(60, 6, replace=False)):
        rare[row, :, column] = 5.0
    features = np.concatenate([features, rare], axis=2)
    folds = make_folds(labels, make_config(n_folds=3, seed=5))
    _, oof = train_logistic(features, labels, folds, 3, make_config())
    assert score_predictions(oof[0, 0], labels, 3)["log_loss"] < 0.2 * math.log(3)


def test_one_trace_serves_every_fit_whatever_ran_before():
    """A fit's arithmetic must not depend on the shapes fitted before it in the process (a generalised retrace moved
    where L-BFGS stopped): both traced functions keep the one trace of their input signature."""
    for n_per_class, extra in ((20, 0), (9, 5)):
        features, labels = two_alike_views(n_per_class)
        features = np.concatenate([features, np.ones((len(labels), 2, extra), np.float32)], axis=2)
        train_logistic(features, labels, make_folds(labels, make_config(n_folds=3)), 3, make_config())
    for function in (train_logistic_module.loss_and_gradient_at, train_logistic_module.search_direction):
        assert function.experimental_get_tracing_count() == 1


def test_each_fold_takes_the_candidate_the_other_folds_validate_best():
    losses = np.array([[0.10, 0.50], [0.40, 0.20], [0.45, 0.30]])  # candidate 0 wins over all folds: 0.95 to 1.00
    assert choose_by_cross_fitting(losses) == ([1, 0, 0], 0)  # fold 0's own 0.10 does not count for fold 0


def test_logistic_regression_keeps_every_class_column_with_two_classes_or_one_absent(monkeypatch):
    monkeypatch.setattr(train_logistic_module, "search_c", lambda validation_loss: [1.0, validation_loss(1.0)][:1])
    features, labels = two_alike_views(n_per_class=12)
    labels = np.where(labels == 1, 2, labels)  # classes 0 and 2 of 3 only
    folds = make_folds(labels, make_config(n_folds=3, seed=5))
    heads, oof = train_logistic(features, labels, folds, 3, make_config())
    np.testing.assert_allclose(oof[0, 0].sum(axis=1), 1, rtol=1e-5)
    assert (oof[0, 0][:, 1] == 0).all()
    train, validation = folds[0]
    # Two classes' softmax, penalised on both columns, is scikit-learn's binary regression at twice the C.
    reference, mean, std = logistic_reference(features, labels, train, 2.0)
    expected = reference.predict_proba((features[validation, 0] - mean) / std)
    np.testing.assert_allclose(oof[0, 0, validation][:, [0, 2]], expected, atol=2e-3)
