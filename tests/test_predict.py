import numpy as np

from kaggle_src.predict import predict_views
from kaggle_src.train_heads import TrainedHead


def head(fold, view, kernel, bias):
    kernel = np.asarray(kernel, np.float32)
    n_features = kernel.shape[0]
    return TrainedHead(fold, view, np.zeros(n_features, np.float32), np.ones(n_features, np.float32), kernel, np.asarray(bias))


def test_every_head_predicts_every_view_in_its_fold_and_view_slot():
    features = np.array([[[-50.0], [50.0]]] * 3, np.float32)  # view 0 says class 1, view 1 says class 0
    constant = np.log([0.7, 0.2, 0.1])  # zero kernel: softmax(log p) = p on every view
    heads = [head(0, 1, [[1.0, -1.0, 0.0]], np.zeros(3)), head(1, 0, np.zeros((1, 3)), constant)]
    predictions = predict_views(heads, features)
    assert predictions.shape == (2, 2, 2, 3, 3)  # (folds, head views, views, rows, classes)
    assert (predictions[0, 1, 0].argmax(axis=1) == 1).all() and (predictions[0, 1, 1].argmax(axis=1) == 0).all()
    np.testing.assert_allclose(predictions[1, 0, 0], np.tile([0.7, 0.2, 0.1], (3, 1)), rtol=1e-5)
    np.testing.assert_allclose(predictions[1, 0, 1], np.tile([0.7, 0.2, 0.1], (3, 1)), rtol=1e-5)
    assert not predictions[0, 0].any() and not predictions[1, 1].any()  # no head for these slots


def test_head_standardises_with_its_own_statistics():
    trained = TrainedHead(0, 0, np.array([10.0]), np.array([0.5]), np.array([[2.0, 0.0]]), np.zeros(2))
    logits = np.array([[(14.0 - 10.0) * 0.5 * 2.0, 0.0]])
    expected = np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose(trained.predict(np.array([[14.0]])), expected, rtol=1e-6)
