import keras
import numpy as np

from kaggle_src.predict import predict_test
from kaggle_src.train_heads import TrainedHead


def constant_head(view, probabilities):
    """A head whose softmax is `probabilities` whatever its input: zero kernel, log-probability bias."""
    inputs = keras.Input((4,))
    dense = keras.layers.Dense(len(probabilities), activation="softmax")
    model = keras.Model(inputs, dense(inputs))
    dense.set_weights([np.zeros((4, len(probabilities))), np.log(probabilities)])
    return TrainedHead(fold=0, view=view, model=model, epochs=1, val_log_loss=0.0, val_accuracy=1.0)


def test_the_prediction_is_the_mean_of_all_heads():
    heads = [constant_head(0, [0.7, 0.2, 0.1]), constant_head(1, [0.1, 0.2, 0.7]), constant_head(1, [0.4, 0.4, 0.2])]
    features = np.zeros((5, 2, 4), np.float32)
    predictions = predict_test(heads, features)
    np.testing.assert_allclose(predictions, np.tile([0.4, 0.8 / 3, 1.0 / 3], (5, 1)), rtol=1e-5)


def test_each_head_sees_only_its_own_view():
    inputs = keras.Input((1,))
    dense = keras.layers.Dense(2, activation="softmax")
    model = keras.Model(inputs, dense(inputs))
    dense.set_weights([np.array([[1.0, -1.0]]), np.zeros(2)])
    head = TrainedHead(fold=0, view=1, model=model, epochs=1, val_log_loss=0.0, val_accuracy=1.0)
    features = np.array([[[-50.0], [50.0]]], np.float32)  # view 0 says class 1, view 1 says class 0
    assert predict_test([head], features)[0].argmax() == 0
