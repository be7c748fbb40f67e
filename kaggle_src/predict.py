"""Stage 5: the test predictions of every head on every view, for the ensembling options to combine.

A test image that could not be read gets the class prior instead: its log loss is bounded, unlike
that of whatever the heads make of a blank image.
"""
import numpy as np


def predict_views(heads, features):
    """Each head's softmax on each view of `features` (n, views, d): (folds, head views, views, n, classes)."""
    n_folds, n_head_views = (max(getattr(head, axis) for head in heads) + 1 for axis in ("fold", "view"))
    n_samples, n_views = features.shape[:2]
    predictions = np.zeros((n_folds, n_head_views, n_views, n_samples, heads[0].bias.shape[0]), np.float32)
    for head in heads:
        for view in range(n_views):
            predictions[head.fold, head.view, view] = head.predict(features[:, view])
    return predictions


def class_prior(labels, n_classes):
    """Class frequencies of the training `labels`, add-one smoothed so that no class gets 0; (classes,)."""
    counts = np.bincount(labels, minlength=n_classes) + 1.0
    return counts / counts.sum()
