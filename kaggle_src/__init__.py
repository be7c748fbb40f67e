"""Dog Breed Identification by transfer learning: Xception + InceptionV3 features, 5-fold x 2-view dense heads.

Stages, one module each: find_inputs, load_images, extract_features, train_heads, predict, ensembles,
write_outputs (with report); pipeline runs them in order. Run with `python -m kaggle_src --help`.
"""
