"""Stage 4: stratified K-fold CV of dropout + softmax heads, one per fold and view, with out-of-fold scores.

Each head standardises its inputs with its training fold's mean and variance (a Normalization
layer, so the statistics travel with the head). With ImageNet features this changes little; with
the tiny-scale features of random-init backbones in dry runs, it is what lets a head learn at all.
"""
from dataclasses import dataclass

import keras
import numpy as np
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import StratifiedKFold


@dataclass
class TrainedHead:
    fold: int
    view: int  # index into the features' view axis
    model: keras.Model
    epochs: int  # epochs run before early stopping
    val_log_loss: float
    val_accuracy: float


def make_folds(labels, n_folds, seed):
    """Stratified, shuffled, reproducible (train_index, validation_index) pairs."""
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros((len(labels), 1)), labels))


def build_head(train_features, n_classes, dropout, learning_rate):
    """Normalization (fitted on `train_features`) -> Dropout -> Dense softmax, compiled with Adam."""
    normalize = keras.layers.Normalization(
        mean=train_features.mean(axis=0), variance=train_features.var(axis=0)
    )
    inputs = keras.Input((train_features.shape[1],))
    x = keras.layers.Dropout(dropout)(normalize(inputs))
    outputs = keras.layers.Dense(n_classes, activation="softmax")(x)
    head = keras.Model(inputs, outputs)
    head.compile(
        optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy"
    )
    return head


def train_heads(features, labels, n_classes, config):
    """Train one head per (fold, view) on `features` (n, views, d); return (heads, out-of-fold (views, n, classes))."""
    n_views = features.shape[1]
    oof = np.zeros((n_views, len(labels), n_classes), np.float32)
    heads = []
    for fold, (train_index, val_index) in enumerate(make_folds(labels, config.n_folds, config.seed)):
        for view in range(n_views):
            keras.utils.set_random_seed(config.seed + fold * n_views + view)
            x_train, x_val = features[train_index, view], features[val_index, view]
            head = build_head(x_train, n_classes, config.dropout, config.learning_rate)
            stop = keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=config.patience, restore_best_weights=True
            )
            history = head.fit(
                x_train,
                labels[train_index],
                validation_data=(x_val, labels[val_index]),
                batch_size=config.head_batch_size,
                epochs=config.max_epochs,
                callbacks=[stop],
                verbose=0,
            )
            oof[view, val_index] = keras.ops.convert_to_numpy(head(x_val, training=False))
            score = score_predictions(oof[view, val_index], labels[val_index], n_classes)
            heads.append(
                TrainedHead(fold, view, head, len(history.history["loss"]), score["log_loss"], score["accuracy"])
            )
            print(
                f"fold {fold} view {view}: {heads[-1].epochs} epochs, "
                f"val log loss {score['log_loss']:.4f}, accuracy {score['accuracy']:.4f}"
            )
    return heads, oof


def score_predictions(probabilities, labels, n_classes):
    """Multi-class log loss (as Kaggle scores it) and accuracy."""
    probabilities = np.clip(np.asarray(probabilities, np.float64), 1e-15, 1 - 1e-15)
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
    return {
        "log_loss": float(log_loss(labels, probabilities, labels=np.arange(n_classes))),
        "accuracy": float(accuracy_score(labels, probabilities.argmax(axis=1))),
    }
