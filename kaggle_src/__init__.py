"""Dog Breed Identification by transfer learning: Xception + InceptionV3 features, 5-fold x 2-view dense heads.

Stages, one module each: find_inputs, load_images, extract_features, train_heads, predict, ensembles,
write_outputs (with report); pipeline runs them in order. Run with `python -m kaggle_src --help`.

Importing the package sets what TensorFlow and Keras read once, at their import: Keras runs on TensorFlow
(Kaggle's image ships JAX and PyTorch too), TensorFlow takes GPU memory as it needs it rather than all of it
at first use, and its start-up chatter stays out of the log.
"""
import os

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
