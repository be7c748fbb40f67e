"""`python -m kaggle_src`: run the pipeline from the command line."""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the log

from kaggle_src.pipeline import main  # noqa: E402  (after the log level is set)

sys.exit(main())
