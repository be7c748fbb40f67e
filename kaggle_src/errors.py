"""How a run reports trouble: a stop (InputError, one line before any heavy work) or a warning it survives."""
import sys

from tqdm import tqdm


class InputError(ValueError):
    """Bad configuration or input files: reported as one line, before any heavy work starts."""


def warn(message):
    """Report a problem the run survives: one line on stderr, on a line of its own even while a progress bar runs."""
    tqdm.write(f"warning: {message}", file=sys.stderr)
