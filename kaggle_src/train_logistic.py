"""Stage 4b: multinomial logistic regressions, one per fold, as the common public kernel has, but on both views
and with C chosen by cross-fitting.

Each regression is fitted on the standardised rows of every view (a flipped dog is as much a dog) and applied to
each view (its TTA). It minimises scikit-learn's objective for LogisticRegression (mean log loss plus
||kernel||^2 / (2 C n), the bias unpenalised) by L-BFGS, stopped as scikit-learn's lbfgs stops, but written in
TensorFlow, so that the whole fit runs where the heads train: on the GPU when there is one. scikit-learn's CPU
fits took minutes at full size (benchmarks/README.md, row 3b), and scipy's L-BFGS-B, with TensorFlow's loss, still
spent more time on its own bookkeeping over the 4097 x 120 parameters than on the loss.
The fits run to a tight tolerance: stopped at scikit-learn's default one, a fit lands wherever its start and
path left it, and on real features that cost more than the choice of C.
"""
import collections

import numpy as np
import tensorflow as tf

from .ensembles import score_predictions
from .errors import progress
from .train_heads import TrainedHead, on_device, out_of_fold, print_validation, standardisation

C_LADDER = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)  # the logistic regressions' inverse L2
# strengths that search_c may try (scikit-learn's C; its default 1)
C_START = 10.0  # where search_c starts: near the best C on real ImageNet features (benchmarks/README.md)
LOGISTIC_TOLERANCE = 1e-6  # a fit stops when no gradient entry is larger (scikit-learn's default: 1e-4)
LOGISTIC_MAX_ITERATIONS = 300  # L-BFGS iterations per fit at most (scikit-learn's default: 100)
LBFGS_MEMORY = 10  # the steps L-BFGS remembers (scikit-learn's lbfgs: 10)
# The traced functions below take any shape from their first call (input_signature), so that one trace serves every
# fold and a fit's arithmetic never depends on what ran before in the process: with reduce_retracing, a process that
# had fitted other shapes ran a generalised trace whose rounding moved where L-BFGS stopped, and a test run's
# submission differed in the 3rd digit from the same run in a fresh process.
MATRIX = tf.TensorSpec([None, None], tf.float32)
SCALAR = tf.TensorSpec([], tf.float32)


class SoftmaxRegression:
    """One fold's L2-regularised softmax regression: its standardised training rows of every view, held as a
    tensor where TensorFlow computes (the GPU when there is one), and its parameters along the path of Cs.

    The parameters are one (features + 1, classes present) float64 tensor, the kernel above the bias; the rows
    stay float32, and the logits are float64 from the matrix product on. With two classes this is the
    multinomial model, which is scikit-learn's binary one at 2C.
    """

    def __init__(self, features, labels):
        n_views, n_features = features.shape[1:]
        rows = features.reshape(-1, n_features)  # row r, view v: r * n_views + v
        self.mean, self.scale = standardisation(rows)
        self.classes = np.unique(labels)  # a class absent from the fold is never predicted
        self.n_views = n_views
        self.rows = on_device((rows - self.mean) * self.scale)
        self.targets = tf.constant(np.repeat(np.searchsorted(self.classes, labels), n_views), tf.int32)
        self.parameters = None  # (features + 1, classes present), once fitted
        self.iterations = 0  # L-BFGS iterations along the path so far

    def fit(self, c):
        """Fit at inverse L2 strength `c` from where the last fit ended (zero at first, unless start_from said
        otherwise); return the L-BFGS iterations it took."""
        start = tf.zeros((self.rows.shape[1] + 1, len(self.classes)), tf.float64) if self.parameters is None \
            else self.parameters
        l2_strength = tf.constant(1 / (c * self.rows.shape[0]), tf.float64)
        self.parameters, iterations = minimise(
            lambda parameters: loss_and_gradient_at(parameters, self.rows, self.targets, l2_strength), start)
        self.iterations += iterations
        return iterations

    def start_from(self, heads):
        """Start the next fit from the mean of other regressions' `heads` (TrainedHeads over every class, one per
        regression; a class absent from one is left out of its mean): near this fit's optimum when those were
        fitted on most of these rows, standardised nearly alike."""
        kernels = np.stack([head.kernel[:, self.classes] for head in heads])
        biases = np.stack([head.bias[self.classes] for head in heads])
        present = np.isfinite(biases)
        mean = np.vstack([np.where(present[:, None], kernels, 0).sum(axis=0),
                          np.where(present, biases, 0).sum(axis=0)]) / present.sum(axis=0)
        self.parameters = tf.constant(mean, tf.float64)

    def heads(self, fold, n_classes):
        """The fitted regression as one TrainedHead per view, over all `n_classes` (an absent class: bias -inf);
        each head's epochs are the L-BFGS iterations of the path to here."""
        kernel, bias = np.zeros((len(self.mean), n_classes), np.float32), np.full(n_classes, -np.inf, np.float32)
        parameters = self.parameters.numpy()
        kernel[:, self.classes], bias[self.classes] = parameters[:-1], parameters[-1]
        return [TrainedHead(fold, view, self.mean, self.scale, kernel, bias, epochs=self.iterations)
                for view in range(self.n_views)]


def minimise(loss_and_gradient, start):
    """Minimise a smooth convex loss from `start` by L-BFGS (Nocedal and Wright's algorithms 7.4 and 7.5) with a
    backtracking line search (sufficient decrease, halving the step). It stops as scikit-learn's lbfgs does: no
    gradient entry above LOGISTIC_TOLERANCE, a relative decrease of the loss under 64 float64 epsilons, or
    LOGISTIC_MAX_ITERATIONS. Return (parameters, iterations).

    The steps and gradient changes of the history are kept in float32: the direction needs no more, and the
    two-loop recursion, a pass over the history per term, took as long as the loss on a small fold in float64.
    """
    x = start
    loss, gradient = loss_and_gradient(x)
    loss = float(loss)
    no_step = (tf.zeros_like(start, tf.float32),) * 2 + (tf.constant(0.0),)  # changes no direction
    history = collections.deque([no_step] * LBFGS_MEMORY, maxlen=LBFGS_MEMORY)  # (s, y, 1 / s.y) of the last steps
    scale = None  # s.y / y.y of the last step: the initial inverse Hessian's scale
    for iteration in range(LOGISTIC_MAX_ITERATIONS):
        if float(tf.reduce_max(tf.abs(gradient))) <= LOGISTIC_TOLERANCE:
            return x, iteration
        direction = tf.cast(search_direction(tf.cast(gradient, tf.float32), tuple(history), tf.constant(scale or 1.0)),
                            tf.float64)
        slope = float(tf.reduce_sum(gradient * direction))
        step = 1.0 if scale else min(1.0, 1 / float(tf.norm(gradient)))
        for _ in range(50):
            x_new = x + step * direction
            loss_new, gradient_new = loss_and_gradient(x_new)
            if float(loss_new) <= loss + 1e-4 * step * slope:
                break
            step /= 2
        else:  # no step along the direction lowers the loss: as far as float64 goes
            return x, iteration
        s, y = x_new - x, gradient_new - gradient
        sy = float(tf.reduce_sum(s * y))
        if sy > 0:  # always, on a strictly convex loss, but for rounding
            history.append((tf.cast(s, tf.float32), tf.cast(y, tf.float32), tf.constant(1 / sy, tf.float32)))
            scale = sy / float(tf.reduce_sum(y * y))
        previous, loss = loss, float(loss_new)
        x, gradient = x_new, gradient_new
        if previous - loss <= 64 * np.finfo(float).eps * max(abs(previous), abs(loss), 1):
            return x, iteration + 1
    return x, LOGISTIC_MAX_ITERATIONS


@tf.function(input_signature=[MATRIX, ((MATRIX, MATRIX, SCALAR),) * LBFGS_MEMORY, SCALAR])
def search_direction(gradient, history, scale):
    """-H gradient by the two-loop recursion: H is L-BFGS' inverse Hessian estimate from `history`, (s, y, 1 / s.y)
    oldest first, starting from `scale` times the identity."""
    direction, alphas = gradient, []
    for s, y, rho in reversed(history):
        alphas.append(rho * tf.reduce_sum(s * direction))
        direction = direction - alphas[-1] * y
    direction = direction * scale
    for (s, y, rho), alpha in zip(history, reversed(alphas)):
        direction = direction + (alpha - rho * tf.reduce_sum(y * direction)) * s
    return -direction


@tf.function(input_signature=[tf.TensorSpec([None, None], tf.float64), MATRIX, tf.TensorSpec([None], tf.int32),
                              tf.TensorSpec([], tf.float64)])
def loss_and_gradient_at(parameters, rows, targets, l2_strength):
    """The objective (mean log loss + l2_strength / 2 * ||kernel||^2) and its gradient at `parameters`.

    The gradient is written out: d loss / d logits = (softmax - one-hot) / rows, and the kernel's gradient is its
    product with the rows, taken as (d_logits^T rows)^T, which a CPU computed in 60% of the time of rows^T d_logits.
    """
    kernel, bias = parameters[:-1], parameters[-1]
    logits = tf.cast(rows @ tf.cast(kernel, tf.float32), tf.float64) + bias
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits))
    d_logits = (tf.nn.softmax(logits) - tf.one_hot(targets, tf.shape(logits)[-1], dtype=tf.float64)) \
        / tf.cast(tf.shape(rows)[0], tf.float64)
    kernel_gradient = tf.transpose(tf.matmul(tf.cast(d_logits, tf.float32), rows, transpose_a=True))
    return loss + l2_strength / 2 * tf.reduce_sum(kernel ** 2), tf.concat(
        [tf.cast(kernel_gradient, tf.float64) + l2_strength * kernel, tf.reduce_sum(d_logits, axis=0)[None]], 0)


def train_logistic(features, labels, folds, n_classes, config):
    """Logistic regressions on `features` (n, views, d), one per fold (SoftmaxRegression). Return (heads, out-of-fold
    predictions).

    C (the inverse L2 strength) is searched along C_LADDER (search_c), every fold fitted at each C tried, each
    fold's regression warm-started from its own fit at the C before. Never from another fold's: that one has seen
    this fold's validation rows, and where the loss is flat a fit stops at the tolerance still near its start (on
    the benchmark's synthetic features, folds started so took no iteration and scored 0.0000 out of fold). A fold's out-of-fold
    rows come from its regression at the C with the lowest validation log loss summed over the other folds, so
    the choice never sees the rows it is scored on. The test gets one regression fitted on every training row at
    the C that is best over all folds, started from the mean of the folds' fits at that C: a fifth more rows than
    each fold's (on the real 6-per-breed features, held out: 0.134 against 0.144 for the folds' mean), so that its
    out-of-fold score, from the folds' regressions, errs on the side of caution. Its heads are those of fold 0.
    """
    features = np.asarray(features, np.float32)
    regressions = [SoftmaxRegression(features[train_index], labels[train_index]) for train_index, _ in folds]
    fitted, losses = {}, {}  # C: per fold, its regression as heads, and their validation log loss over every view

    def validation_loss(c):
        fitted[c], losses[c] = [], []
        bar.total = max(bar.total, len(fitted) * len(folds))  # the search went on to another C: its fits too
        bar.refresh()
        for fold, (regression, (_, validation_index)) in enumerate(zip(regressions, folds)):
            regression.fit(c)
            fitted[c].append(regression.heads(fold, n_classes))
            losses[c].append(np.mean([
                score_predictions(head.predict(features[validation_index, head.view]), labels[validation_index],
                                  n_classes)["log_loss"]
                for head in fitted[c][fold]
            ]))
            bar.update()
        return sum(losses[c])

    with progress(2 * len(folds), "fit logistic regressions, every fold at each C tried", "fit") as bar:
        tried = search_c(validation_loss)
    cross_fitted, best = choose_by_cross_fitting(np.array([losses[c] for c in tried]).T)
    print("logistic regressions, validation log loss by C: "
          + ", ".join(f"C={c:g} {np.mean(losses[c]):.4f}" for c in tried)
          + f"; out of fold, each fold at the best C on the others ({', '.join(f'{tried[i]:g}' for i in cross_fitted)})")
    oof_heads = [head for fold, choice in enumerate(cross_fitted) for head in fitted[tried[choice]][fold]]
    oof = out_of_fold(oof_heads, features, labels, folds, n_classes)
    print_validation(oof_heads, config.views, "L-BFGS iterations")
    every_row = SoftmaxRegression(features, labels)
    every_row.start_from([fold_heads[0] for fold_heads in fitted[tried[best]]])
    print(f"logistic regression for the test: every training row at C={tried[best]:g}, "
          f"{every_row.fit(tried[best])} L-BFGS iterations from the folds' mean")
    return every_row.heads(0, n_classes), oof


def search_c(validation_loss):
    """The Cs tried, ascending: C_START and the next C up C_LADDER, then on along the ladder the way that lowered
    `validation_loss(C)` (which fits at C; called once per C) while it keeps falling: one C past the lowest."""
    start = C_LADDER.index(C_START)
    losses = {index: validation_loss(C_LADDER[index]) for index in (start, start + 1)}
    step = 1 if losses[start + 1] < losses[start] else -1
    index = start + 1 if step == 1 else start
    while 0 <= index + step < len(C_LADDER) and losses[index] == min(losses.values()):
        index += step
        losses[index] = validation_loss(C_LADDER[index])
    return [C_LADDER[index] for index in sorted(losses)]


def choose_by_cross_fitting(losses):
    """From validation `losses` (folds, candidates): per fold, the candidate with the lowest loss summed over the
    other folds (never its own); and the candidate with the lowest loss over all folds."""
    total = losses.sum(axis=0)
    return [int((total - own).argmin()) for own in losses], int(total.argmin())
