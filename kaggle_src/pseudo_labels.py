"""Stage 4c: pseudo-labelling, the test set put to work. A second round of heads trains on the training rows plus
test rows, the test rows' targets being the first round's predictions of them.

The test rows are split into as many parts as there are folds. Fold k's second-round heads train on the test rows
of every part but part k, and part k's rows are predicted by fold k's heads alone: no test row is predicted by a head
that trained towards a prediction of it. (A linear head on thousands of features can fit its training rows' targets
nearly exactly; trained on every test row, it hands the first round's guesses back, mistakes included: on Stanford
Dogs photos that raised the held-out log loss by 7%.) Fold k's targets come from fold k's first-round heads, which
never saw the fold's validation rows, so the second round's out-of-fold scores stay honest, and they score the same
kind of head that predicts the test. Test rows never enter a validation fold. Off by default: on the Stanford Dogs
photos that defaults are chosen on, this too raised the held-out log loss, by 6% (one fold's heads predict each test
row, not five folds' averaged), though it lowered the out-of-fold one by 9% (benchmarks/README.md).

- `soft`: the targets are the fold's first-round heads' geometric mean over every view.
- `hard`: only the test rows that prediction gives a breed with at least HARD_CONFIDENCE, as that breed (one-hot).
"""
from dataclasses import dataclass

import numpy as np

from .ensembles import combine

PSEUDO_LABELS = ("off", "soft", "hard")
HARD_CONFIDENCE = 0.9  # hard pseudo-labels: the least first-round probability of its breed a test row needs


@dataclass
class PseudoLabels:
    """Each fold's test rows to train on, their targets, and the part of the test set the fold predicts."""

    features: np.ndarray  # (n_test, views, d): the test features the rows index
    rows: list  # per fold: indices into `features`
    targets: list  # per fold: (len(rows), classes)
    parts: list  # per fold: the test rows (indices into `features`) that its heads alone predict

    def own_fold(self, test_predictions):
        """`test_predictions` (folds, head views, views, n_test, classes) with each part's rows taken from its own
        fold's heads in every fold's place, so that any mean over the folds is that fold's prediction."""
        predictions = test_predictions.copy()
        for fold, part in enumerate(self.parts):
            predictions[:, :, :, part] = test_predictions[fold][:, :, part]
        return predictions


def pseudo_labels(heads, test_features, readable, mode, seed):
    """The PseudoLabels of `mode` (soft or hard) for the `readable` test rows of `test_features` (n_test, views, d),
    from the first round's `heads` (one per fold and view); the test rows split into parts at random by `seed`."""
    folds = sorted({head.fold for head in heads})
    shuffled = np.random.default_rng(seed).permutation(len(test_features))
    parts = [np.sort(part) for part in np.array_split(shuffled, len(folds))]
    rows, targets = [], []
    for fold in folds:
        others = np.setdiff1d(readable, parts[fold])
        fold_heads = [head for head in heads if head.fold == fold]
        predictions = combine(np.stack([head.predict(test_features[others, view]) for head in fold_heads
                                        for view in range(test_features.shape[1])]), geometric=True)
        keep = predictions.max(axis=1) >= HARD_CONFIDENCE if mode == "hard" else np.ones(len(others), bool)
        rows.append(others[keep])
        targets.append(np.eye(predictions.shape[1])[predictions[keep].argmax(axis=1)] if mode == "hard"
                       else predictions)
    return PseudoLabels(test_features, rows, targets, parts)
