import numpy as np

from kaggle_src.predict import predict_test
from kaggle_src.train_heads import TrainedHead


def head(view, kernel, bias):
    kernel = np.asarray(kernel, np.float32)
    n_features = kernel.shape[0]
    return TrainedHead(0, view, np.zeros(n_features, np.float32), np.ones(n_features, np.float32), kernel, np.asarray(bias))


def test_the_prediction_is_the_mean_of_all_heads():
    constant = [[0.7, 0.2, 0.1], [0.1, 0.2, 0.7], [0.4, 0.4, 0.2]]  # zero kernel: softmax(log p) = p
    heads = [head(view, np.zeros((4, 3)), np.log(p)) for view, p in zip((0, 1, 1), constant)]
    predictions = predict_test(heads, np.zeros((5, 2, 4), np.float32))
    np.testing.assert_allclose(predictions, np.tile([0.4, 0.8 / 3, 1.0 / 3], (5, 1)), rtol=1e-5)


def test_each_head_sees_only_its_own_view():
    features = np.array([[[-50.0], [50.0]]], np.float32)  # view 0 says class 1, view 1 says class 0
    assert predict_test([head(1, [[1.0, -1.0]], np.zeros(2))], features)[0].argmax() == 0
    assert predict_test([head(0, [[1.0, -1.0]], np.zeros(2))], features)[0].argmax() == 1


def test_head_standardises_with_its_own_statistics():
    trained = TrainedHead(0, 0, np.array([10.0]), np.array([0.5]), np.array([[2.0, 0.0]]), np.zeros(2))
    logits = np.array([[(14.0 - 10.0) * 0.5 * 2.0, 0.0]])
    expected = np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose(trained.predict(np.array([[14.0]])), expected, rtol=1e-6)
