"""The ensembling options, each scored on the out-of-fold predictions; the run submits the best fixed recipe, or a
preferred one within the noise of it (within_noise_of_best).

Each option is a fixed recipe for combining heads' predictions into one per image. The same recipe
makes an image's out-of-fold prediction (from the heads that never trained on it: one per view) and
its test prediction (from every fold's heads), so its out-of-fold log loss measures what the test
gets; the logistic regressions' test prediction comes from one fitted on every row, which the folds'
score, on fewer rows, underrates. There are only a handful, so that choosing the lowest does not itself
overfit the 10,222 rows.

Temperature scaling divides the log-probabilities by a temperature T fitted to minimise the log loss
on out-of-fold predictions. It is cross-fitted: each fold's rows are scaled with the T fitted on the
other folds' rows, so its score is never taken on the rows it was fitted on; the test predictions
get the T fitted on every row.

The blend is the other options' predictions, weighted: the weights (on the simplex) maximise the
likelihood of the true breeds, fitted as the temperature is, cross-fitted for its own score and on
every row for the test. The fitted options are submitted only when --ensemble names them: their values fit one
fold's heads' predictions, not the test's, which average every fold's heads.
"""
import math
from dataclasses import dataclass

import numpy as np

EPS = 1e-15  # Kaggle's clipping: the smallest probability a log is taken of
MAX_TEMPERATURE = 20.0  # temperatures are searched in [1 / MAX_TEMPERATURE, MAX_TEMPERATURE]


@dataclass(frozen=True)
class Option:
    name: str
    family: str  # whose predictions: "heads" (dropout + softmax), "logistic" (logistic regressions), "both", or "options"
    tta: bool  # each head on every view (test-time augmentation), not only its own
    geometric: bool  # geometric mean (renormalised) rather than arithmetic
    temperature: bool  # temperature-scaled
    description: str


OPTIONS = (
    Option("heads_mean", "heads", False, False, False, "each head on its own view, arithmetic mean (the seed's)"),
    Option("geometric", "heads", False, True, False, "each head on its own view, geometric mean"),
    Option("tta", "heads", True, False, False, "each head on both views, arithmetic mean"),
    Option("tta_geometric", "heads", True, True, False, "each head on both views, geometric mean"),
    Option(
        "tta_geometric_temperature", "heads", True, True, True,
        "each head on both views, geometric mean, temperature-scaled",
    ),
    Option("logistic", "logistic", False, False, False, "logistic regressions fitted on every view, each applied to "
           "every view, arithmetic mean"),
    Option("heads_logistic", "both", False, True, False, "the geometric mean of the heads' (tta_geometric, or "
           "geometric with one view) and the logistic regressions' predictions"),
    Option("blend", "options", False, False, False, "the options above, weighted to fit the out-of-fold rows"),
)
BLEND_ITERATIONS = 500  # EM steps for the blend's weights: each raises the likelihood
NOISE_STANDARD_ERRORS = 1.0  # a lead in out-of-fold log loss within this many standard errors is noise
# The order in which within_noise_of_best prefers the fixed recipes, by their held-out log loss on the Stanford Dogs
# photos that defaults are chosen on (benchmarks/README.md). The options that fit values on the out-of-fold rows
# (tta_geometric_temperature, blend) are scored, and submitted only when named (--ensemble): fitted to one fold's heads'
# predictions, they misjudge the test's, which average every fold's (on the mixed photos a temperature that won out of
# fold by far lost 10% held out)
PREFERENCE = ("tta_geometric", "geometric", "heads_logistic", "tta", "heads_mean", "logistic")


@dataclass
class ScoredOption:
    """One option's predictions and its out-of-fold scores."""

    option: Option
    oof: np.ndarray  # (n_train, classes)
    test: np.ndarray  # (n_test, classes)
    log_loss: float
    accuracy: float
    temperature: float | None = None  # fitted on every out-of-fold row, applied to the test; None: not scaled
    weights: dict | None = None  # the blend's: {option: weight}, fitted on every out-of-fold row

    def scores(self):
        """What metrics.json records: log loss, accuracy and, for a scaled option, its temperature; for the
        blend, its weights."""
        scores = {"log_loss": self.log_loss, "accuracy": self.accuracy}
        if self.temperature is not None:
            scores["temperature"] = self.temperature
        if self.weights is not None:
            scores["weights"] = self.weights
        return scores


def score_predictions(probabilities, labels, n_classes):
    """Multi-class log loss (as Kaggle scores it) and accuracy; for a head, an option or a submission."""
    from sklearn.metrics import accuracy_score, log_loss  # here, not above: config.py takes OPTIONS without sklearn

    probabilities = as_kaggle_scores(probabilities)
    return {
        "log_loss": float(log_loss(labels, probabilities, labels=np.arange(n_classes))),
        "accuracy": float(accuracy_score(labels, probabilities.argmax(axis=1))),
    }


def score_options(predictions, labels, folds):
    """Every option that `predictions` allow, in OPTIONS' order, with its out-of-fold scores.

    `predictions`: {family: (out-of-fold (head views, views, n, classes), test (folds, head views, views,
    n_test, classes))}. An option whose family is absent is left out, as are the tta options with one view.
    """
    scored = []
    for option in OPTIONS:
        if option.family == "both":
            by_name = {candidate.option.name: candidate for candidate in scored}
            if "logistic" in by_name:
                heads = by_name.get("tta_geometric", by_name["geometric"])
                scored.append(geometric_mean(option, [heads, by_name["logistic"]], labels))
            continue
        if option.family == "options":
            scored.append(blend(option, scored, labels, folds))
            continue
        if option.family not in predictions:
            continue
        oof, test = predictions[option.family]
        if option.tta and oof.shape[1] < 2:
            continue
        pairs = [
            (head, view) for head in range(oof.shape[0]) for view in range(oof.shape[1]) if option.tta or head == view
        ]
        oof_mean = combine(np.stack([oof[head, view] for head, view in pairs]), option.geometric)
        test_mean = combine(np.concatenate([test[:, head, view] for head, view in pairs]), option.geometric)
        temperature = None
        if option.temperature:
            temperature = fit_temperature(oof_mean, labels)
            oof_mean, test_mean = cross_fit_temperature(oof_mean, labels, folds), scale(test_mean, temperature)
        scores = score_predictions(oof_mean, labels, oof.shape[-1])
        scored.append(ScoredOption(option, oof_mean, test_mean, scores["log_loss"], scores["accuracy"], temperature))
    return scored


def geometric_mean(option, scored, labels):
    """The options `scored` combined by their predictions' geometric mean, renormalised, out of fold and on the test."""
    oof = combine(np.stack([candidate.oof for candidate in scored]), geometric=True)
    test = combine(np.stack([candidate.test for candidate in scored]), geometric=True)
    scores = score_predictions(oof, labels, oof.shape[-1])
    return ScoredOption(option, oof, test, scores["log_loss"], scores["accuracy"])


def blend(option, scored, labels, folds):
    """The options `scored` weighted to maximise the likelihood of `labels` out of fold: each fold's rows with
    the weights fitted on the other folds' rows, the test with those fitted on every row."""
    rows = np.arange(len(labels))
    truth = np.stack([candidate.oof[rows, labels] for candidate in scored])  # (options, n): p of the true breed
    oof = np.empty_like(scored[0].oof)
    for train_index, validation_index in folds:
        weights = fit_blend_weights(truth[:, train_index])
        oof[validation_index] = np.tensordot(weights, [candidate.oof[validation_index] for candidate in scored], 1)
    weights = fit_blend_weights(truth)
    test = np.tensordot(weights, [candidate.test for candidate in scored], 1)
    scores = score_predictions(oof, labels, oof.shape[-1])
    return ScoredOption(option, oof, test, scores["log_loss"], scores["accuracy"],
                        weights={candidate.option.name: float(weight) for candidate, weight in zip(scored, weights)})


def fit_blend_weights(truth):
    """Weights on the simplex that maximise mean(log(weights @ truth)), `truth` (options, n) being each option's
    probability of each row's true class: the mixture-proportion EM update, which never lowers the likelihood."""
    truth = np.clip(np.asarray(truth, np.float64), EPS, 1)
    weights = np.full(len(truth), 1 / len(truth))
    for _ in range(BLEND_ITERATIONS):
        weights *= (truth / (weights @ truth)).mean(axis=1)
        weights /= weights.sum()
    return weights


def scored_names(flips, logistic):
    """The names of the options that a run with these settings scores, in OPTIONS' order (score_options finds
    the same from the predictions): the tta ones need the flipped view, logistic the logistic regressions."""
    return [
        option.name for option in OPTIONS
        if (flips or not option.tta) and (logistic or option.family not in ("logistic", "both"))
    ]


def choose(scored, labels, config):
    """The option that `config`'s ensemble setting names; if none, the preferred one within the noise of the best
    (within_noise_of_best)."""
    if config.ensemble:
        return next(candidate for candidate in scored if candidate.option.name == config.ensemble)
    return within_noise_of_best(scored, labels)


def best(scored):
    """The option with the lowest out-of-fold log loss; on a tie the earlier one (heads_mean before the rest)."""
    return min(scored, key=lambda candidate: candidate.log_loss)


def within_noise_of_best(scored, labels):
    """The first fixed recipe in PREFERENCE whose out-of-fold log loss is within NOISE_STANDARD_ERRORS standard errors
    of the best fixed recipe's: the one-standard-error rule, on the per-image difference of the two options' log loss
    (paired, as both predict the same images).

    On a few hundred images the lowest out-of-fold score is often luck, and it misleads in a known direction: an
    image's out-of-fold prediction comes from its one fold's heads, its test prediction from every fold's, whose
    arithmetic mean is the less confident the more heads it averages, where the geometric mean is not; and a value
    fitted on the out-of-fold predictions (a temperature, the blend's weights) fits that fold's heads, not the test's.
    """
    fixed = [candidate for candidate in scored if candidate.option.name in PREFERENCE]
    top = best(fixed)
    for candidate in sorted(fixed, key=lambda candidate: PREFERENCE.index(candidate.option.name)):
        difference = per_image_log_loss(candidate.oof, labels) - per_image_log_loss(top.oof, labels)
        if difference.mean() <= NOISE_STANDARD_ERRORS * difference.std() / math.sqrt(len(labels)):
            return candidate
    return top


def per_image_log_loss(probabilities, labels):
    """Each image's log loss, -log p(true class), as Kaggle scores it: their mean is score_predictions' log loss."""
    return -np.log(as_kaggle_scores(probabilities)[np.arange(len(labels)), labels])


def as_kaggle_scores(probabilities):
    """`probabilities` (n, classes) as Kaggle's metric takes them: clipped to [EPS, 1 - EPS], rows renormalised."""
    probabilities = np.clip(np.asarray(probabilities, np.float64), EPS, 1 - EPS)
    return probabilities / probabilities.sum(axis=1, keepdims=True)


def combine(members, geometric):
    """The mean over `members` (k, n, classes) for each row: arithmetic, or geometric renormalised to sum to 1."""
    if geometric:
        return _softmax(np.log(np.clip(members, EPS, 1)).mean(axis=0, dtype=np.float64))
    return members.mean(axis=0, dtype=np.float64)


def scale(probabilities, temperature):
    """softmax(log p / T) for each row p of `probabilities`."""
    return _softmax(np.log(np.clip(probabilities, EPS, 1)) / temperature)


def fit_temperature(probabilities, labels):
    """The T in [1/20, 20] that minimises the log loss of scale(probabilities, T), by golden-section search.

    The log loss is convex in 1/T, so it has one minimum along log T, which the search narrows to.
    """
    log_p = np.log(np.clip(np.asarray(probabilities, np.float64), EPS, 1))
    rows = np.arange(len(labels))

    def loss(log_temperature):
        logits = log_p / math.exp(log_temperature)
        return np.mean(_logsumexp(logits) - logits[rows, labels])

    low, high, ratio = -math.log(MAX_TEMPERATURE), math.log(MAX_TEMPERATURE), (math.sqrt(5) - 1) / 2
    for _ in range(40):
        left, right = high - ratio * (high - low), low + ratio * (high - low)
        if loss(left) < loss(right):
            high = right
        else:
            low = left
    return math.exp((low + high) / 2)


def cross_fit_temperature(probabilities, labels, folds):
    """`probabilities` scaled fold by fold, each validation fold with the T fitted on the other folds' rows."""
    scaled = np.empty_like(probabilities)
    for train_index, validation_index in folds:
        temperature = fit_temperature(probabilities[train_index], labels[train_index])
        scaled[validation_index] = scale(probabilities[validation_index], temperature)
    return scaled


def _logsumexp(logits):
    top = logits.max(axis=1)
    return top + np.log(np.exp(logits - top[:, None]).sum(axis=1))


def _softmax(logits):
    return np.exp(logits - _logsumexp(logits)[:, None])
