"""Stage 4c: pseudo-labelling, the test set put to work. A second round of heads trains on the training rows plus
the test rows, the test rows' targets being the first round's predictions of them.

Each fold's second-round heads take their targets from the same fold's first-round heads only: those never saw the
fold's validation rows, so the second round's out-of-fold scores stay honest. The whole first-round ensemble has
seen every training row, and its predictions of the test would carry the validation rows' labels into training.
Test rows never enter a validation fold.

- `soft`: every readable test row, its target the fold's first-round heads' geometric mean over every view.
- `hard`: the test rows that prediction gives a breed with at least HARD_CONFIDENCE, as that breed (one-hot).
"""
from dataclasses import dataclass

import numpy as np

from .ensembles import combine

PSEUDO_LABELS = ("off", "soft", "hard")
HARD_CONFIDENCE = 0.9  # hard pseudo-labels: the least first-round probability of its breed a test row needs


@dataclass
class PseudoLabels:
    """Each fold's test rows to train on and their targets."""

    features: np.ndarray  # (n_test, views, d): the test features the rows index
    rows: list  # per fold: indices into `features`
    targets: list  # per fold: (len(rows), classes)


def pseudo_labels(heads, test_features, readable, mode):
    """The PseudoLabels of `mode` (soft or hard) for the `readable` test rows of `test_features` (n_test, views, d),
    from the first round's `heads` (one per fold and view)."""
    rows, targets = [], []
    for fold in sorted({head.fold for head in heads}):
        fold_heads = [head for head in heads if head.fold == fold]
        predictions = combine(np.stack([head.predict(test_features[readable, view]) for head in fold_heads
                                        for view in range(test_features.shape[1])]), geometric=True)
        if mode == "hard":
            confident = predictions.max(axis=1) >= HARD_CONFIDENCE
            rows.append(readable[confident])
            targets.append(np.eye(predictions.shape[1])[predictions[confident].argmax(axis=1)])
        else:
            rows.append(readable)
            targets.append(predictions)
    return PseudoLabels(test_features, rows, targets)
