"""What a run says on stderr besides its results: a stop (InputError, one line before any heavy work), a warning
it survives, and a long stage's progress bar."""
import sys

from tqdm import tqdm

PROGRESS_SECONDS = 10  # a progress bar's refresh in a log that is no terminal


class InputError(ValueError):
    """Bad configuration or input files: reported as one line, before any heavy work starts."""


def warn(message):
    """Report a problem the run survives: one line on stderr, on a line of its own even while a progress bar runs."""
    tqdm.write(f"warning: {message}", file=sys.stderr)


def progress(total, desc, unit):
    """A progress bar on stderr with a rate and an ETA. In a log that is no terminal (Kaggle's), a line every
    PROGRESS_SECONDS at most, so that a long stage does not flood it; close it before printing anything else."""
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                mininterval=2 if sys.stderr.isatty() else PROGRESS_SECONDS)
