"""Stage 5: the test predictions, the mean of every head's prediction on its own view's features."""
import keras
import numpy as np


def predict_test(heads, test_features):
    """Mean over `heads` of each head's softmax on `test_features[:, head.view]`; (n_test, classes)."""
    predictions = [keras.ops.convert_to_numpy(head.model(test_features[:, head.view], training=False)) for head in heads]
    return np.mean(predictions, axis=0, dtype=np.float64)
