"""Stage 4: stratified K-fold CV of dropout + softmax heads, one per fold and view, with out-of-fold scores.

All heads train together, as in the seed's ten sequential fits but in one loop: each step draws every
head's next batch of its own shuffled training rows, applies each head to its own view with one
batched matmul, and updates all heads with one Adam step, whose updates are per weight, so the heads
stay independent. Each head stops early on its own validation loss, keeps its best epoch's weights,
and leaves the loop: no wasted rows, no wasted epochs. Each fold and view's head is the average of a few
such members (`members_per_head`): the geometric mean of their predictions, at one head's cost to apply.

With `standardise` (the default; the seed's heads had none) each head centres and scales its inputs by its
training fold's mean and standard deviation: on real ImageNet features it lowered the held-out log loss of
the seed's heads (benchmarks/README.md gives the measurement), and random-init features (dry runs), nearly constant per
column, teach a head nothing without it.

The logistic regressions (train_logistic) become TrainedHeads too, so everything downstream treats both kinds
alike.
"""
import warnings
from dataclasses import dataclass, replace

import numpy as np
import tensorflow as tf
from keras import ops
from sklearn.model_selection import StratifiedKFold

from .ensembles import score_predictions
from .errors import progress, warn


STD_FLOOR = 0.01  # standardisation: no feature's deviation counts as less than this times the median feature's. On a
# 10-breed stub at 75 px, real Xception weights, the logistic regressions scored 4.15 out of fold without it (chance:
# 2.30; features 20,000 deviations out), 0.035 with it. On the real photos at 299 and 448 px every feature's deviation
# is above 0.1 times the median's, so the floor changes nothing there


@dataclass
class TrainedHead:
    """One trained head: softmax(((x - mean) * scale) @ kernel + bias) on its view's features."""

    fold: int
    view: int  # index into the features' view axis
    mean: np.ndarray  # (features,)
    scale: np.ndarray  # (features,) 1 / standard deviation
    kernel: np.ndarray  # (features, classes)
    bias: np.ndarray  # (classes,)
    epochs: int = 0  # epochs run before it stopped early (for a logistic regression: L-BFGS iterations)
    val_log_loss: float = float("nan")
    val_accuracy: float = float("nan")

    def predict(self, features):
        """Class probabilities (n, classes) for features (n, d) of this head's view."""
        # Scaling the kernel's rows, not the features' columns: the same product, one pass over the features fewer.
        logits = (features - self.mean) @ (self.scale[:, None] * self.kernel) + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        return probabilities / probabilities.sum(axis=1, keepdims=True)


def make_folds(labels, config):
    """config.n_folds stratified (train_index, validation_index) pairs, shuffled by config.seed: reproducible.

    A breed with fewer images than folds is missing from some folds' validation rows: one warning line of the
    run's own says so, in place of scikit-learn's (which names its own source line).
    """
    counts = np.bincount(labels)
    short = counts[(counts > 0) & (counts < config.n_folds)]
    if len(short):
        warn(f"training labels: {len(short)} breed(s) with fewer images than the {config.n_folds} folds (the fewest "
             f"has {short.min()}); each is validated in as many folds as it has images")
    splitter = StratifiedKFold(n_splits=config.n_folds, shuffle=True, random_state=config.seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        return list(splitter.split(np.zeros((len(labels), 1)), labels))


class HeadsTrainer:
    """The weights of every head, (heads, features, classes) and (heads, classes), and one compiled Adam step
    that trains the heads still active on a batch of their own rows.

    The step is Keras' Dense + Dropout + Adam written out for many heads at once, cheaper than Keras' on a CPU,
    where the heads train when there is no GPU: the gradient is written out rather than taped, the dropout mask
    comes from one random byte per feature (so the rate is rounded to 1/256) rather than one random float, and
    Adam's update is TensorFlow's fused kernel, one pass over every head's weights rather than several.
    """

    def __init__(self, heads, features, targets, config):
        n_samples, n_views, n_features = features.shape
        n_classes = targets.shape[1]
        self.features = on_device(features.reshape(n_samples * n_views, n_features))  # row r, view v: r * n_views + v
        self.targets = on_device(targets)  # (target rows, classes): one-hot labels, then any pseudo-labels
        self.n_views = n_views
        self.views = tf.constant([head.view for head in heads], tf.int32)
        self.standardise = config.standardise
        self.mean = on_device(np.stack([head.mean for head in heads]))
        self.scale = on_device(np.stack([head.scale for head in heads]))
        limit = np.sqrt(6.0 / (n_features + n_classes))  # Glorot-uniform, as each head's own Dense layer would have
        initial = np.random.default_rng(config.seed).uniform(-limit, limit, (len(heads), n_features, n_classes))
        self.kernel = tf.Variable(initial.astype(np.float32), name="kernel")
        self.bias = tf.Variable(np.zeros((len(heads), n_classes), np.float32), name="bias")
        self.moments = [(tf.Variable(tf.zeros_like(weights)), tf.Variable(tf.zeros_like(weights)))
                        for weights in (self.kernel, self.bias)]
        self.iterations = tf.Variable(0.0)
        self.learning_rate = config.learning_rate
        self.dropped_bytes = round(config.dropout * 256)  # a feature is dropped when its random byte is below this
        self.random = tf.random.Generator.from_seed(config.seed)
        self.step = tf.function(self._step, reduce_retracing=True)

    def _step(self, active, rows, target_rows, weights):
        """One Adam step for heads `active` (a,) on their feature rows (a, batch), whose targets are `target_rows`
        of the targets; weight 0 marks padding.

        The gradient is written out rather than taped: each head's loss is the weighted mean cross-entropy of its
        batch, so d loss / d logits = (softmax - target) * weight / total weight, and the kernel's gradient is the
        inputs' transpose times that. On a CPU the tape's gradients of the gathers took a third of the step.
        """
        x = tf.gather(self.features, rows * self.n_views + tf.gather(self.views, active)[:, None])
        if self.standardise:
            x = (x - tf.gather(self.mean, active)[:, None]) * tf.gather(self.scale, active)[:, None]
        kept_scale = 1.0
        if self.dropped_bytes:
            words = self.random.uniform_full_int(tf.concat([tf.shape(x)[:-1], [-(-x.shape[-1] // 4)]], 0), tf.uint32)
            random_bytes = tf.reshape(tf.bitcast(words, tf.uint8), tf.concat([tf.shape(x)[:-1], [-1]], 0))
            x = tf.where(random_bytes[..., :x.shape[-1]] >= self.dropped_bytes, x, 0.0)
            kept_scale = 256 / (256 - self.dropped_bytes)  # inverted dropout's scaling, moved past the linear matmul
        every_head = tf.equal(tf.size(active), self.kernel.shape[0])
        kernel = tf.cond(every_head, lambda: tf.identity(self.kernel), lambda: tf.gather(self.kernel, active))
        logits = kept_scale * tf.einsum("abd,adc->abc", x, kernel) + tf.gather(self.bias, active)[:, None]
        share = weights / tf.reduce_sum(weights, axis=1, keepdims=True)
        d_logits = (tf.nn.softmax(logits) - tf.gather(self.targets, target_rows)) * share[..., None]
        gradients = tf.einsum("abd,abc->adc", x, kept_scale * d_logits), tf.reduce_sum(d_logits, axis=1)
        step = self.iterations.assign_add(1.0)
        for variable, (first, second), gradient in zip((self.kernel, self.bias), self.moments, gradients):
            # Once a head has stopped, its rows of the gradient are zero (its best weights are already kept).
            gradient = tf.cond(every_head, lambda gradient=gradient: gradient,
                               lambda gradient=gradient, variable=variable: tf.scatter_nd(
                                   active[:, None], gradient, tf.shape(variable, out_type=tf.int32)))
            tf.raw_ops.ResourceApplyAdam(  # Keras' Adam defaults: beta_1 0.9, beta_2 0.999, epsilon 1e-7
                var=variable.handle, m=first.handle, v=second.handle, beta1_power=0.9 ** step,
                beta2_power=0.999 ** step, lr=self.learning_rate, beta1=0.9, beta2=0.999, epsilon=1e-7,
                grad=gradient,
            )


def train_heads(features, labels, folds, n_classes, config, pseudo=None):
    """Train one head per fold and view on `features` (n, views, d); return (heads, out-of-fold predictions).

    Each head is config.members_per_head members trained apart (their own initialisation, dropout masks and
    batch order; each stopped early on its own), with their kernels and biases averaged: softmax of the mean
    logits, which is the members' geometric mean, renormalised, as they share the fold's standardisation. So the
    ensemble costs one head's prediction, and every option downstream sees one head per fold and view.

    With `pseudo` (PseudoLabels) each fold's heads also train on its test rows, towards its targets; they are
    validated, and stopped early, on the fold's validation rows alone.
    """
    features = np.asarray(features, np.float32)
    n_views = features.shape[1]
    identity = np.zeros(features.shape[-1], np.float32), np.ones(features.shape[-1], np.float32)
    heads = [
        TrainedHead(fold, view, *(standardisation(features[train_index, view]) if config.standardise else identity),
                    kernel=None, bias=None)
        for fold, (train_index, _) in enumerate(folds)
        for view in range(n_views)
    ]
    members = [replace(head) for head in heads for _ in range(config.members_per_head)]
    training, targets, every_feature = training_rows(features, labels, folds, n_classes, pseudo)

    trainer = HeadsTrainer(members, every_feature, targets, config)
    shuffle = np.random.default_rng(config.seed)
    best_loss, best_epoch = np.full(len(members), np.inf), np.zeros(len(members), int)
    active = list(range(len(members)))
    bar = progress(config.max_epochs, f"train {len(heads)} heads, {config.members_per_head} members each", "epoch")
    for epoch in range(config.max_epochs):
        orders = [shuffle.permutation(len(training[members[index].fold][0])) for index in active]
        for start in range(0, max(map(len, orders)), config.head_batch_size):
            batches = [order[start:start + config.head_batch_size] for order in orders]
            rows = np.zeros((len(active), max(map(len, batches))), np.int32)
            target_rows, weights = np.zeros_like(rows), np.zeros(rows.shape, np.float32)
            for position, (index, batch) in enumerate(zip(active, batches)):
                feature_rows, its_targets = training[members[index].fold]
                rows[position, :len(batch)], target_rows[position, :len(batch)] = feature_rows[batch], its_targets[batch]
                weights[position, :len(batch)] = 1
            trainer.step(tf.constant(active, tf.int32), tf.constant(rows), tf.constant(target_rows),
                         tf.constant(weights))
        kernel, bias = ops.convert_to_numpy(trainer.kernel), ops.convert_to_numpy(trainer.bias)
        for index in list(active):
            member, rows = members[index], folds[members[index].fold][1]
            candidate = TrainedHead(member.fold, member.view, member.mean, member.scale, kernel[index], bias[index])
            probabilities = candidate.predict(features[rows, member.view])
            loss = -np.mean(np.log(np.maximum(probabilities[np.arange(len(rows)), labels[rows]], 1e-15)))
            if loss < best_loss[index]:
                best_loss[index], best_epoch[index] = loss, epoch
                member.kernel, member.bias = kernel[index].copy(), bias[index].copy()
            if epoch - best_epoch[index] >= config.patience or epoch + 1 == config.max_epochs:
                member.epochs = epoch + 1
                active.remove(index)
        bar.set_postfix_str(f"{len(active)} training, best val log loss {best_loss.min():.4f}", refresh=False)
        bar.update()
        if not active:
            break
    bar.close()
    k = config.members_per_head
    heads = [mean_head(members[index * k:(index + 1) * k]) for index in range(len(heads))]
    oof = out_of_fold(heads, features, labels, folds, n_classes)
    print_validation(heads, config.views, "epochs (its longest member's)")
    return heads, oof


def training_rows(features, labels, folds, n_classes, pseudo):
    """What each fold's heads train on: per fold (feature rows, target rows), the targets (one-hot labels, then each
    fold's pseudo-labels) and the features they index (the training rows, then the test rows of `pseudo`)."""
    targets = [np.eye(n_classes, dtype=np.float32)[labels]]
    training = [(train_index, train_index) for train_index, _ in folds]
    if pseudo is None:
        return training, targets[0], features
    offset = len(labels)
    for fold, (train_index, _) in enumerate(folds):
        rows = pseudo.rows[fold]
        training[fold] = (np.concatenate([train_index, len(labels) + rows]),
                          np.concatenate([train_index, offset + np.arange(len(rows))]))
        targets.append(pseudo.targets[fold].astype(np.float32))
        offset += len(rows)
    return training, np.concatenate(targets), np.concatenate([features, np.asarray(pseudo.features, np.float32)])


def mean_head(members):
    """One head from `members` of a fold and view (one standardisation): their mean kernel and bias, so that its
    softmax is their predictions' geometric mean, renormalised; its epochs are its longest member's."""
    return TrainedHead(members[0].fold, members[0].view, members[0].mean, members[0].scale,
                       np.mean([member.kernel for member in members], axis=0),
                       np.mean([member.bias for member in members], axis=0),
                       epochs=max(member.epochs for member in members))


def on_device(array):
    """`array` as a tensor made by an op on the first GPU when there is one (else the CPU), once: a tf.constant
    made from numpy may stay in host memory and be copied to the GPU at every step that reads it."""
    with tf.device("/GPU:0" if tf.config.list_logical_devices("GPU") else "/CPU:0"):
        return tf.identity(array)


def standardisation(train):
    """(mean, 1 / standard deviation) of the training rows `train` (n, d); a constant feature stays 0.

    A feature's deviation counts as at least STD_FLOOR times the median feature's: one that barely varies over a
    fold's rows (a rare activation) would otherwise scale an image where it does fire to thousands of deviations,
    and its logits with it."""
    std = train.std(axis=0)
    floor = STD_FLOOR * np.median(std[std > 0]) if (std > 0).any() else 0.0
    return train.mean(axis=0), (1 / np.where(std > 0, np.maximum(std, floor), 1)).astype(np.float32)


def out_of_fold(heads, features, labels, folds, n_classes):
    """Each head's predictions on its fold's validation rows, on every view: (head views, views, n, classes).

    Also scores each head on its own view's validation rows: its val_log_loss and val_accuracy.
    """
    n_samples, n_views = features.shape[:2]
    oof = np.zeros((max(head.view for head in heads) + 1, n_views, n_samples, n_classes), np.float32)
    for head in heads:
        rows = folds[head.fold][1]
        for view in range(n_views):
            oof[head.view, view, rows] = head.predict(features[rows, view])
        score = score_predictions(oof[head.view, head.view, rows], labels[rows], n_classes)
        head.val_log_loss, head.val_accuracy = score["log_loss"], score["accuracy"]
    return oof


def print_validation(heads, views, counted):
    """One line per head: its fold, its view (named by `views`), what it ran (its epochs, as `counted` calls
    them) and its validation scores."""
    for head in heads:
        print(f"fold {head.fold} {views[head.view]}: {head.epochs} {counted}, "
              f"val log loss {head.val_log_loss:.4f}, accuracy {head.val_accuracy:.4f}")
