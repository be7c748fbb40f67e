"""The method as the seed (reference/002) and the public kernels wrote it, kept faithful for side-by-side timing.

Nothing here is used by kaggle_src: it is what our stages are measured against.
"""
import cv2
import keras
import numpy as np
from keras.layers import Dense, Dropout, Input, Lambda
from keras.models import Model, Sequential

PREPROCESS = {
    "Xception": keras.applications.xception.preprocess_input,
    "InceptionV3": keras.applications.inception_v3.preprocess_input,
}


def load_images(paths, width):
    """The public kernels' loop: cv2.imread and cv2.resize, one image after another (BGR kept, as they did)."""
    images = np.zeros((len(paths), width, width, 3), np.uint8)
    for index, path in enumerate(paths):
        images[index] = cv2.resize(cv2.imread(str(path)), (width, width))
    return images


def get_features(constructor, data, width, weights):
    """The seed's get_features: a fresh backbone, a preprocessing Lambda, one float32 predict over `data`."""
    pretrained_model = getattr(keras.applications, constructor)(
        include_top=False, input_shape=(width, width, 3), weights=weights, pooling="avg"
    )
    inputs = Input((width, width, 3))
    x = Lambda(PREPROCESS[constructor], name="preprocessing")(inputs)
    outputs = pretrained_model(x)
    model = Model(inputs, outputs)
    return model.predict(data, batch_size=64, verbose=0)


def extract_features(data, width, weights):
    """The seed's four predict calls: each backbone on the images, then on host np.flip copies.

    `weights` maps "Xception" and "InceptionV3" to their .h5 files. Returns (n, 2, 4096) like ours.
    """
    x_train = data.astype(np.float32)  # the seed held its images as float32 on the host
    original = np.concatenate([get_features(name, x_train, width, weights[name]) for name in PREPROCESS], axis=-1)
    flipped_images = np.flip(x_train, axis=2)
    flipped = np.concatenate([get_features(name, flipped_images, width, weights[name]) for name in PREPROCESS], axis=-1)
    return np.stack([original, flipped], axis=1)


def train_heads(features, labels, n_classes, folds, test_features, dropout=0.5, learning_rate=1e-3, epochs=50,
                patience=5, batch_size=128):
    """The seed's heads: per view and fold, a fresh Dropout + Dense softmax model fitted with early stopping.

    Returns (out-of-fold (views, n, classes), test predictions averaged over every head).
    """
    n_views, n_features = features.shape[1], features.shape[2]
    oof = np.zeros((n_views, len(labels), n_classes), np.float32)
    test = []
    for view in range(n_views):
        for train, validation in folds:
            model = Sequential([Input((n_features,)), Dropout(dropout), Dense(n_classes, activation="softmax")])
            model.compile(keras.optimizers.Adam(learning_rate), "sparse_categorical_crossentropy")
            stop = keras.callbacks.EarlyStopping(patience=patience, restore_best_weights=True)
            model.fit(features[train, view], labels[train], validation_data=(features[validation, view], labels[validation]),
                      epochs=epochs, batch_size=batch_size, callbacks=[stop], verbose=0)
            oof[view, validation] = model.predict(features[validation, view], batch_size=1024, verbose=0)
            test.append(model.predict(test_features[:, view], batch_size=1024, verbose=0))
    return oof, np.mean(test, axis=0)


def train_logistic(features, labels, folds, test_features):
    """The common public kernel's logistic regressions: per fold, scikit-learn's LogisticRegression with its
    defaults on the standardised original view. Returns (out-of-fold (n, classes), test predictions averaged
    over the folds)."""
    from sklearn.linear_model import LogisticRegression

    oof, test = None, []
    for train, validation in folds:
        mean, std = features[train, 0].mean(axis=0), features[train, 0].std(axis=0) + 1e-12
        model = LogisticRegression().fit((features[train, 0] - mean) / std, labels[train])
        predicted = model.predict_proba((features[validation, 0] - mean) / std)
        oof = np.zeros((len(labels), predicted.shape[1]), np.float32) if oof is None else oof
        oof[validation] = predicted
        test.append(model.predict_proba((test_features[:, 0] - mean) / std))
    return oof, np.mean(test, axis=0)
