"""Stage 5: the test predictions, the mean of every head's prediction on its own view's features.

A test image that could not be read gets the class prior instead: its log loss is bounded, unlike
that of whatever the heads make of a blank image.
"""
import numpy as np


def predict_test(heads, test_features):
    """Mean over `heads` of each head's softmax on `test_features[:, head.view]`; (n_test, classes)."""
    return np.mean([head.predict(test_features[:, head.view]) for head in heads], axis=0, dtype=np.float64)


def class_prior(labels, n_classes):
    """Class frequencies of the training `labels`, add-one smoothed so that no class gets 0; (classes,)."""
    counts = np.bincount(labels, minlength=n_classes) + 1.0
    return counts / counts.sum()
