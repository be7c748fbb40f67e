"""The stub's breeds keep their class under a horizontal flip, as dogs do: the pipeline trains and predicts on
flipped views too, and a flip that turned one breed's look into another's would teach its heads nonsense."""
import cv2
import numpy as np
import pytest

from make_stub import COMPETITION, breed_pattern, breed_signatures
from tests.conftest import INPUT_STUB


@pytest.mark.parametrize("height, width", [(60, 80), (61, 81), (119, 159), (96, 96)])
def test_every_breeds_pattern_is_its_own_horizontal_mirror(height, width):
    """For each of the 120 signatures the committed stub draws, at any phase and size, odd or even: the
    mirrored noiseless pattern is the pattern (plain oriented stripes at angle θ mirror to π - θ and fail)."""
    rng = np.random.default_rng(0)
    for signature in breed_signatures(rng, 120):
        for phase in rng.uniform(0, 2 * np.pi, 3):
            pattern = breed_pattern(signature, phase, height, width)
            np.testing.assert_allclose(pattern[:, ::-1], pattern, rtol=0, atol=1e-2)


def test_every_committed_stub_image_looks_the_same_mirrored():
    """input_stub/ was written with the flip-invariant patterns: each image, blurred to take out its noise
    (std 10) and JPEG's blocks, differs from its mirror by noise alone (median 3.4 here; the old stripes: 24)."""
    paths = sorted((INPUT_STUB / COMPETITION).glob("*/*.jpg"))
    assert len(paths) == 840
    for path in paths:
        image = cv2.GaussianBlur(cv2.imread(str(path)).astype(np.float32), (5, 5), 0)
        assert np.abs(image - image[:, ::-1]).mean() < 8, path.name
