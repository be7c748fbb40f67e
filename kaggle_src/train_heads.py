"""Stage 4: stratified K-fold CV of dropout + softmax heads, one per fold and view, with out-of-fold scores;
and, as the common public kernel does, multinomial logistic regressions on the original view, one per fold.

All heads train together, as one Keras model: a layer holding every head's weights applies each
head to its own view with one batched matmul, and each head's loss counts only its own training
rows. Adam's updates are per weight, so the heads stay independent, as in the seed's ten
sequential fits, but share one pass over the data and one compiled step instead of ten. Each head
stops early on its own validation loss and keeps its best epoch's weights.

Each head standardises its inputs with its training fold's mean and standard deviation. With
ImageNet features this changes little; with the tiny-scale features of random-init backbones in
dry runs, it is what lets a head learn at all.

The logistic regressions (scikit-learn's: lbfgs, its default C and limit of 100 iterations)
standardise the same way and become TrainedHeads too, so everything downstream treats both kinds
alike. They run on the CPU, about 0.8 CPU-seconds an iteration at full size (8,178 x 4,096 x 120 a
fold): synthetic features of that size converged in 26-39 iterations, 25-40 s a fold on two cores;
at the limit, about 1.5 minutes a fold.
"""
import warnings
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import StratifiedKFold


@dataclass
class TrainedHead:
    """One trained head: softmax(((x - mean) * scale) @ kernel + bias) on its view's features."""

    fold: int
    view: int  # index into the features' view axis
    mean: np.ndarray  # (features,)
    scale: np.ndarray  # (features,) 1 / standard deviation
    kernel: np.ndarray  # (features, classes)
    bias: np.ndarray  # (classes,)
    epochs: int = 0  # epochs run before it stopped early (for a logistic regression: lbfgs iterations)
    val_log_loss: float = float("nan")
    val_accuracy: float = float("nan")

    def predict(self, features):
        """Class probabilities (n, classes) for features (n, d) of this head's view."""
        logits = ((features - self.mean) * self.scale) @ self.kernel + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        return probabilities / probabilities.sum(axis=1, keepdims=True)


def make_folds(labels, n_folds, seed):
    """Stratified, shuffled, reproducible (train_index, validation_index) pairs."""
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros((len(labels), 1)), labels))


class StackedHeads(keras.layers.Layer):
    """Every head in one layer: head h standardises view views[h], drops out, and applies its own dense layer."""

    def __init__(self, views, mean, scale, n_classes, dropout, seed):
        super().__init__()
        self.views = np.asarray(views)
        self.mean, self.scale = ops.convert_to_tensor(mean), ops.convert_to_tensor(scale)
        self.dropout = keras.layers.Dropout(dropout, seed=seed)
        n_heads, n_features = mean.shape
        limit = np.sqrt(6.0 / (n_features + n_classes))  # Glorot-uniform of each head's own Dense layer
        self.kernel = self.add_weight(
            shape=(n_heads, n_features, n_classes),
            initializer=keras.initializers.RandomUniform(-limit, limit, seed=seed),
            name="kernel",
        )
        self.bias = self.add_weight(shape=(n_heads, n_classes), initializer="zeros", name="bias")

    def call(self, features, training=False):
        x = (ops.take(features, self.views, axis=1) - self.mean) * self.scale  # (batch, heads, features)
        x = self.dropout(x, training=training)
        return ops.einsum("bhd,hdc->bhc", x, self.kernel) + self.bias  # logits (batch, heads, classes)


def per_head_crossentropy(targets, logits):
    """Sum over heads of each head's mean cross-entropy on its own training rows (target -1: not one of them)."""
    mask = ops.cast(targets >= 0, logits.dtype)
    labels = ops.cast(ops.maximum(targets, 0), "int32")
    losses = ops.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    return ops.sum(ops.sum(losses * mask, axis=0) / ops.maximum(ops.sum(mask, axis=0), 1.0))


class PerHeadEarlyStopping(keras.callbacks.Callback):
    """Early stopping and best-weight restoring for each head on its own validation rows."""

    def __init__(self, layer, heads, features, labels, validation_rows, patience):
        super().__init__()
        self.layer, self.heads, self.features, self.labels = layer, heads, features, labels
        self.validation_rows, self.patience = validation_rows, patience
        self.best_loss = np.full(len(heads), np.inf)
        self.best_epoch = np.zeros(len(heads), int)

    def on_epoch_end(self, epoch, logs=None):
        kernel, bias = ops.convert_to_numpy(self.layer.kernel), ops.convert_to_numpy(self.layer.bias)
        for index, (head, rows) in enumerate(zip(self.heads, self.validation_rows)):
            if head.epochs:  # stopped already
                continue
            candidate = TrainedHead(head.fold, head.view, head.mean, head.scale, kernel[index], bias[index])
            probabilities = candidate.predict(self.features[rows, head.view])
            loss = -np.mean(np.log(np.maximum(probabilities[np.arange(len(rows)), self.labels[rows]], 1e-15)))
            if loss < self.best_loss[index]:
                self.best_loss[index], self.best_epoch[index] = loss, epoch
                head.kernel, head.bias = kernel[index].copy(), bias[index].copy()
            elif epoch - self.best_epoch[index] >= self.patience:
                head.epochs = epoch + 1
        if all(head.epochs for head in self.heads):
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        for head in self.heads:
            head.epochs = head.epochs or self.params["epochs"]


def train_heads(features, labels, folds, n_classes, config):
    """Train one head per fold and view on `features` (n, views, d); return (heads, out-of-fold predictions)."""
    features = np.asarray(features, np.float32)
    n_samples, n_views, n_features = features.shape
    heads, targets = [], np.full((n_samples, len(folds) * n_views), -1, np.int32)
    for fold, (train_index, _) in enumerate(folds):
        for view in range(n_views):
            targets[train_index, len(heads)] = labels[train_index]
            heads.append(TrainedHead(fold, view, *standardisation(features[train_index, view]), kernel=None, bias=None))

    keras.utils.set_random_seed(config.seed)
    inputs = keras.Input((n_views, n_features))
    layer = StackedHeads(
        [head.view for head in heads],
        np.stack([head.mean for head in heads]),
        np.stack([head.scale for head in heads]),
        n_classes,
        config.dropout,
        config.seed,
    )
    model = keras.Model(inputs, layer(inputs))
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=per_head_crossentropy)
    stopping = PerHeadEarlyStopping(layer, heads, features, labels, [folds[head.fold][1] for head in heads], config.patience)
    model.fit(
        features, targets, batch_size=config.head_batch_size, epochs=config.max_epochs, callbacks=[stopping], verbose=0
    )
    return heads, out_of_fold(heads, features, labels, folds, n_classes, "epochs")


def train_logistic(features, labels, folds, n_classes):
    """One logistic regression per fold on the original view of `features` (n, views, d), as TrainedHeads;
    return (heads, out-of-fold predictions)."""
    features = np.asarray(features, np.float32)
    heads = []
    for fold, (train_index, _) in enumerate(folds):
        mean, scale = standardisation(features[train_index, 0])
        with warnings.catch_warnings():  # hitting the iteration limit is reported as the head's iteration count
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = LogisticRegression().fit((features[train_index, 0] - mean) * scale, labels[train_index])
        kernel, bias = np.zeros((features.shape[-1], n_classes), np.float32), np.full(n_classes, -np.inf, np.float32)
        coef, intercept = model.coef_, model.intercept_
        if len(model.classes_) == 2:  # one logit z for two classes: softmax([-z/2, z/2]) = sigmoid(z)
            coef, intercept = np.vstack([-coef / 2, coef / 2]), np.hstack([-intercept / 2, intercept / 2])
        # A class absent from the fold's training rows keeps bias -inf: never predicted.
        kernel[:, model.classes_], bias[model.classes_] = coef.T, intercept
        heads.append(TrainedHead(fold, 0, mean, scale, kernel, bias, epochs=int(model.n_iter_.max())))
    return heads, out_of_fold(heads, features, labels, folds, n_classes, "lbfgs iterations")


def standardisation(train):
    """(mean, 1 / standard deviation) of the training rows `train` (n, d); a constant feature stays 0."""
    std = train.std(axis=0)
    return train.mean(axis=0), (1 / np.where(std > 0, std, 1)).astype(np.float32)


def out_of_fold(heads, features, labels, folds, n_classes, steps):
    """Each head's predictions on its fold's validation rows, on every view: (head views, views, n, classes).

    Also scores each head on its own view's validation rows (its val_log_loss and val_accuracy).
    """
    n_samples, n_views = features.shape[:2]
    oof = np.zeros((max(head.view for head in heads) + 1, n_views, n_samples, n_classes), np.float32)
    for head in heads:
        rows = folds[head.fold][1]
        for view in range(n_views):
            oof[head.view, view, rows] = head.predict(features[rows, view])
        score = score_predictions(oof[head.view, head.view, rows], labels[rows], n_classes)
        head.val_log_loss, head.val_accuracy = score["log_loss"], score["accuracy"]
        print(
            f"fold {head.fold} view {head.view}: {head.epochs} {steps}, "
            f"val log loss {head.val_log_loss:.4f}, accuracy {head.val_accuracy:.4f}"
        )
    return oof


def score_predictions(probabilities, labels, n_classes):
    """Multi-class log loss (as Kaggle scores it) and accuracy."""
    probabilities = np.clip(np.asarray(probabilities, np.float64), 1e-15, 1 - 1e-15)
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
    return {
        "log_loss": float(log_loss(labels, probabilities, labels=np.arange(n_classes))),
        "accuracy": float(accuracy_score(labels, probabilities.argmax(axis=1))),
    }
