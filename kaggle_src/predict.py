"""Stage 5: the test predictions, the mean of every head's prediction on its own view's features."""
import numpy as np


def predict_test(heads, test_features):
    """Mean over `heads` of each head's softmax on `test_features[:, head.view]`; (n_test, classes)."""
    return np.mean([head.predict(test_features[:, head.view]) for head in heads], axis=0, dtype=np.float64)
