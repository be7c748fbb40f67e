"""`python -m kaggle_src`: run the pipeline from the command line."""
import sys

from kaggle_src.pipeline import main

sys.exit(main())
