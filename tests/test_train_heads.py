import math

import numpy as np
import pytest
import tensorflow as tf

from kaggle_src.config import make_config
from kaggle_src.ensembles import score_predictions
from kaggle_src import train_heads as train_heads_module
from kaggle_src.train_heads import (
    STD_FLOOR, HeadsTrainer, TrainedHead, make_folds, mean_head, standardisation, train_heads,
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


def test_a_breed_with_fewer_images_than_folds_is_one_warning_line_of_our_own(capsys):
    import warnings

    labels = np.repeat(np.arange(3), [10, 2, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scikit-learn's "least populated class" warning would fail here
        folds = make_folds(labels, make_config(n_folds=5, seed=0))
    assert sorted(np.concatenate([val for _, val in folds])) == list(range(len(labels)))
    assert capsys.readouterr().err.splitlines() == [
        "warning: training labels: 2 breed(s) with fewer images than the 5 folds (the fewest has 1); each is "
        "validated in as many folds as it has images"]


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


def test_a_heads_members_train_apart_and_it_is_their_mean(monkeypatch):
    features, labels = separable()
    config = make_config(n_folds=3, max_epochs=40, patience=5, learning_rate=0.02, members_per_head=3)
    groups = []
    monkeypatch.setattr(train_heads_module, "mean_head", lambda members: groups.append(members) or mean_head(members))
    heads, oof = train_heads(features, labels, make_folds(labels, config), 3, config)
    assert [(head.fold, head.view) for head in heads] == [(f, v) for f in range(3) for v in range(2)]
    assert [len(group) for group in groups] == [3] * 6
    for head, group in zip(heads, groups):
        assert {(member.fold, member.view) for member in group} == {(head.fold, head.view)}
        kernels = [member.kernel for member in group]
        assert not np.allclose(kernels[0], kernels[1]) and not np.allclose(kernels[1], kernels[2])  # trained apart
        np.testing.assert_allclose(head.kernel, np.mean(kernels, axis=0), rtol=1e-6)
        assert head.epochs == max(member.epochs for member in group)
    assert score_predictions(oof[0, 0], labels, 3)["log_loss"] < 0.5 * math.log(3)


def test_the_mean_head_predicts_its_members_geometric_mean():
    rng = np.random.default_rng(2)
    mean, scale = rng.normal(0, 1, 6).astype(np.float32), rng.uniform(0.5, 2, 6).astype(np.float32)
    members = [TrainedHead(1, 0, mean, scale, rng.normal(0, 1, (6, 4)).astype(np.float32),
                           rng.normal(0, 1, 4).astype(np.float32), epochs=epochs) for epochs in (3, 9, 5)]
    x = rng.normal(0, 1, (10, 6)).astype(np.float32)
    geometric = np.exp(np.mean([np.log(member.predict(x)) for member in members], axis=0))
    head = mean_head(members)
    np.testing.assert_allclose(head.predict(x), geometric / geometric.sum(axis=1, keepdims=True), rtol=1e-4)
    assert (head.fold, head.view, head.epochs) == (1, 0, 9)


def test_standardisation_scales_each_feature_by_its_deviation_but_never_past_a_floor():
    rng = np.random.default_rng(4)
    train = rng.normal(3, [1.0, 2.0, 4.0, 1e-7, 0.0], (200, 5)).astype(np.float32)
    mean, scale = standardisation(train)
    std = train.std(axis=0)
    np.testing.assert_allclose(mean, train.mean(axis=0))
    np.testing.assert_allclose(scale[:3], 1 / std[:3], rtol=1e-6)  # the usual ones: unit deviation
    np.testing.assert_allclose(scale[3], 1 / (STD_FLOOR * np.median(std[:4])), rtol=1e-6)  # barely varying: the floor
    assert scale[4] == 1  # constant: left as it is, centred to 0


def test_without_standardise_heads_see_the_features_as_they_are_like_the_seeds():
    features, labels = separable()
    config = make_config(n_folds=3, max_epochs=40, patience=40, learning_rate=0.02, standardise=False)
    heads, oof = train_heads(features, labels, make_folds(labels, config), 3, config)
    for head in heads:
        assert not head.mean.any() and (head.scale == 1).all()
    assert score_predictions(oof[0, 0], labels, 3)["log_loss"] < 0.5 * math.log(3)  # the unit-scale view learns
    assert score_predictions(oof[1, 1], labels, 3)["log_loss"] > 0.9 * math.log(3)  # the 1e-5-scale view cannot


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


def test_each_step_is_keras_adam_on_each_heads_own_batch_and_a_stopped_head_leaves_the_others_alone():
    """The written-out gradient and the fused Adam step of the heads trainer match Keras' Dense softmax fitted by its
    Adam, head by head (no dropout: the random masks differ), padding rows counting for nothing. A head's weights
    are compared as they were after its last step: once stopped, they are no longer read."""
    import keras

    rng = np.random.default_rng(5)
    features, labels = rng.normal(1, 2, (30, 2, 8)).astype(np.float32), rng.integers(0, 3, 30)
    heads = [TrainedHead(fold, view, *standardisation(features[:20, view]), kernel=None, bias=None)
             for fold, view in ((0, 0), (1, 1), (2, 0))]
    config = make_config(dropout=0.0, learning_rate=0.05)
    trainer = HeadsTrainer(heads, features, np.eye(3, dtype=np.float32)[labels], config)
    initial = trainer.kernel.numpy()
    batches = [[np.arange(0, 10), np.arange(10, 16), np.arange(20, 30)], [np.arange(5, 15), np.arange(0, 7)]]
    steps = [[0, 1, 2], [0, 2]]  # head 1 has stopped before the second step
    after = {}  # head: (kernel, bias) after its last step
    for active, batch in zip(steps, batches):
        rows = np.zeros((len(active), 10), np.int32)
        weights = np.zeros(rows.shape, np.float32)
        for index, head_rows in enumerate(batch):
            rows[index, :len(head_rows)], weights[index, :len(head_rows)] = head_rows, 1
        trainer.step(tf.constant(active, tf.int32), tf.constant(rows), tf.constant(rows), tf.constant(weights))
        after |= {index: (trainer.kernel.numpy()[index], trainer.bias.numpy()[index]) for index in active}
    for index, head in enumerate(heads):
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, activation="softmax")])
        model.set_weights([initial[index], np.zeros(3, np.float32)])
        model.compile(keras.optimizers.Adam(config.learning_rate), "sparse_categorical_crossentropy")
        for active, batch in zip(steps, batches):
            if index in active:
                head_rows = batch[active.index(index)]
                model.train_on_batch((features[head_rows, head.view] - head.mean) * head.scale, labels[head_rows])
        for ours, keras_weights in zip(after[index], model.get_weights()):
            np.testing.assert_allclose(ours, keras_weights, rtol=1e-4, atol=1e-6)


def test_pseudo_labels_come_from_each_folds_own_first_round_heads_on_the_other_folds_test_parts():
    """Fold k's pseudo-labels are the geometric mean of fold k's heads over every view (never another fold's, which
    trained on fold k's validation rows), on the readable test rows outside part k, which fold k's heads alone
    predict; hard ones keep only the rows predicted at HARD_CONFIDENCE or more, one-hot."""
    from kaggle_src.pseudo_labels import HARD_CONFIDENCE, pseudo_labels

    rng = np.random.default_rng(1)
    test = rng.normal(0, 1, (12, 2, 4)).astype(np.float32)
    heads = [TrainedHead(fold, view, np.zeros(4, np.float32), np.ones(4, np.float32),
                         rng.normal(0, 3, (4, 3)).astype(np.float32), np.zeros(3, np.float32))
             for fold in range(3) for view in range(2)]
    readable = np.delete(np.arange(12), [1])  # row 1 unreadable: never a pseudo-label
    soft = pseudo_labels(heads, test, readable, "soft", seed=0)
    assert sorted(np.concatenate(soft.parts)) == list(range(12)) and [len(part) for part in soft.parts] == [4, 4, 4]
    for fold in range(3):
        assert list(soft.rows[fold]) == [row for row in readable if row not in soft.parts[fold]]
        own = [head.predict(test[soft.rows[fold], view]) for head in heads if head.fold == fold for view in range(2)]
        expected = np.exp(np.log(own).mean(axis=0))
        np.testing.assert_allclose(soft.targets[fold], expected / expected.sum(axis=1, keepdims=True), rtol=1e-5)
    hard = pseudo_labels(heads, test, readable, "hard", seed=0)
    for fold in range(3):
        confident = soft.targets[fold].max(axis=1) >= HARD_CONFIDENCE
        assert list(hard.rows[fold]) == list(soft.rows[fold][confident])
        assert (hard.targets[fold].argmax(axis=1) == soft.targets[fold][confident].argmax(axis=1)).all()
        assert (hard.targets[fold].max(axis=1) == 1).all()
    assert any(len(hard.rows[fold]) < len(soft.rows[fold]) for fold in range(3))  # the threshold left some out
    predictions = rng.random((3, 2, 2, 12, 3))  # (folds, head views, views, n_test, classes)
    own_fold = soft.own_fold(predictions)
    for fold, part in enumerate(soft.parts):
        for slot in range(3):  # every fold's place holds the part's own fold's prediction
            np.testing.assert_array_equal(own_fold[slot][:, :, part], predictions[fold][:, :, part])


def test_second_round_heads_train_on_their_folds_test_rows_and_are_validated_on_training_rows_alone():
    """With pseudo-labels each fold's heads train on its training rows plus its own test rows, towards its own targets;
    validation (and so early stopping and the out-of-fold predictions) sees the training rows only. Test rows whose
    pseudo-labels carry the true breeds teach heads that saw too few training rows."""
    from kaggle_src.pseudo_labels import PseudoLabels
    from kaggle_src.train_heads import training_rows

    features, labels = separable(n_per_class=30, seed=3)
    train, test = features[::6], features[1::6]  # 5 training rows a breed: too few for the heads alone
    train_labels, test_labels = labels[::6], labels[1::6]
    config = make_config(n_folds=5, max_epochs=30, patience=30, learning_rate=0.02)
    folds = make_folds(train_labels, config)
    truth = np.eye(3)[test_labels]
    pseudo = PseudoLabels(test, [np.arange(len(test)), np.arange(0, len(test), 2)] + [np.arange(len(test))] * 3,
                          [truth, truth[::2]] + [truth] * 3, parts=None)
    training, targets, every_feature = training_rows(train, train_labels, folds, 3, pseudo)
    assert len(every_feature) == len(train) + len(test)
    for fold, ((train_index, validation_index), (rows, target_rows)) in enumerate(zip(folds, training)):
        assert not set(rows) & set(validation_index)  # a validation row never trains its own fold
        np.testing.assert_array_equal(rows[:len(train_index)], train_index)
        np.testing.assert_array_equal(rows[len(train_index):], len(train) + pseudo.rows[fold])
        np.testing.assert_array_equal(targets[target_rows[len(train_index):]], pseudo.targets[fold])
        np.testing.assert_array_equal(targets[target_rows[:len(train_index)]], np.eye(3)[train_labels[train_index]])
    _, oof_alone = train_heads(train, train_labels, folds, 3, config)
    heads, oof = train_heads(train, train_labels, folds, 3, config, pseudo)
    assert oof.shape == oof_alone.shape == (2, 2, len(train), 3)
    alone, with_pseudo = (score_predictions(o[0, 0], train_labels, 3)["log_loss"] for o in (oof_alone, oof))
    assert with_pseudo < 0.8 * alone
