"""Write a small copy of the competition's layout, with images that carry a learnable signal.

    python make_stub.py                      # rewrites input_stub/ (the committed stub)
    python make_stub.py --out /tmp/stub --classes 10 --train-per-class 8

Layout: <out>/dog-breed-identification/{labels.csv, sample_submission.csv, train/, test/}, as on
Kaggle. Ids are 32 hex characters, the breeds are the real 120 (the first N with --classes), and
sample_submission.csv lists the test ids in an order unlike the file system's, so a pipeline
that mixes up ids, labels or columns is caught. The test images' breeds go to
<out>/stub_test_labels.csv, outside the competition folder, so tests can score a submission. Each breed has its own pair of colours and its
own chevron of stripes (an angle and a frequency), so even random-init backbones separate the breeds far better
than chance: a dry run's out-of-fold log loss far below ln(classes) proves that everything
stayed aligned. The chevrons are mirrored about the image's vertical centre line, so a horizontal flip
leaves every breed's pattern as it was: a breed keeps its class when flipped, as a dog does (plain
oriented stripes would turn angle θ into π − θ, another breed's look). Deterministic for a given seed.
"""
import argparse
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

BREEDS = (
    "affenpinscher afghan_hound african_hunting_dog airedale american_staffordshire_terrier "
    "appenzeller australian_terrier basenji basset beagle bedlington_terrier bernese_mountain_dog "
    "black-and-tan_coonhound blenheim_spaniel bloodhound bluetick border_collie border_terrier "
    "borzoi boston_bull bouvier_des_flandres boxer brabancon_griffon briard brittany_spaniel "
    "bull_mastiff cairn cardigan chesapeake_bay_retriever chihuahua chow clumber cocker_spaniel "
    "collie curly-coated_retriever dandie_dinmont dhole dingo doberman english_foxhound "
    "english_setter english_springer entlebucher eskimo_dog flat-coated_retriever french_bulldog "
    "german_shepherd german_short-haired_pointer giant_schnauzer golden_retriever gordon_setter "
    "great_dane great_pyrenees greater_swiss_mountain_dog groenendael ibizan_hound irish_setter "
    "irish_terrier irish_water_spaniel irish_wolfhound italian_greyhound japanese_spaniel "
    "keeshond kelpie kerry_blue_terrier komondor kuvasz labrador_retriever lakeland_terrier "
    "leonberg lhasa malamute malinois maltese_dog mexican_hairless miniature_pinscher "
    "miniature_poodle miniature_schnauzer newfoundland norfolk_terrier norwegian_elkhound "
    "norwich_terrier old_english_sheepdog otterhound papillon pekinese pembroke pomeranian pug "
    "redbone rhodesian_ridgeback rottweiler saint_bernard saluki samoyed schipperke "
    "scotch_terrier scottish_deerhound sealyham_terrier shetland_sheepdog shih-tzu "
    "siberian_husky silky_terrier soft-coated_wheaten_terrier staffordshire_bullterrier "
    "standard_poodle standard_schnauzer sussex_spaniel tibetan_mastiff tibetan_terrier "
    "toy_poodle toy_terrier vizsla walker_hound weimaraner welsh_springer_spaniel "
    "west_highland_white_terrier whippet wire-haired_fox_terrier yorkshire_terrier"
).split()
COMPETITION = "dog-breed-identification"
TEST_ANSWERS = "stub_test_labels.csv"  # beside, not inside, the competition folder: for tests only


def breed_signatures(rng, classes):
    """Each breed's signature: two BGR colours, its stripes' angle in [0, π) and frequency (cycles per pixel)."""
    return [
        (rng.uniform(0, 255, 3), rng.uniform(0, 255, 3), rng.uniform(0, np.pi), rng.uniform(0.02, 0.15))
        for _ in range(classes)
    ]


def breed_pattern(signature, phase, height, width):
    """A breed's noiseless float BGR pattern: its two colours blended by stripes in a chevron.

    The stripes run at the signature's angle on the right half and mirrored on the left (the distance across is
    taken from the vertical centre line, |x - (width - 1) / 2|), so the pattern is its own horizontal mirror.
    Angles θ and π - θ give chevrons pointing up and down: distinct breeds, each flip-invariant.
    """
    colour_a, colour_b, angle, frequency = signature
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    along = np.abs(xs - (width - 1) / 2) * np.cos(angle) + ys * np.sin(angle)
    mix = 0.5 + 0.5 * np.sin(2 * np.pi * frequency * along + phase)
    return colour_a * mix[..., None] + colour_b * (1 - mix[..., None])


def breed_image(rng, signature, height, width):
    """A BGR uint8 image of one breed: its pattern at a random phase, plus noise."""
    image = breed_pattern(signature, rng.uniform(0, 2 * np.pi), height, width)
    image += rng.normal(0, 10, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_stub(out, classes=120, train_per_class=6, test_per_class=1, seed=0):
    """Write the stub under `out` and return the competition folder."""
    if not 2 <= classes <= len(BREEDS):
        raise ValueError(f"classes={classes}: expected 2 to {len(BREEDS)}")
    rng = np.random.default_rng(seed)
    breeds = BREEDS[:classes]
    signatures = breed_signatures(rng, classes)
    root = Path(out) / COMPETITION
    for split in ("train", "test"):
        (root / split).mkdir(parents=True, exist_ok=True)

    def write_images(split, per_class):
        rows = []
        for label, signature in enumerate(signatures):
            for _ in range(per_class):
                image_id = rng.bytes(16).hex()
                height, width = int(rng.integers(60, 120)), int(rng.integers(80, 160))
                image = breed_image(rng, signature, height, width)
                cv2.imwrite(str(root / split / f"{image_id}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 80])
                rows.append((image_id, breeds[label]))
        return pd.DataFrame(rows, columns=["id", "breed"])

    labels = write_images("train", train_per_class)
    labels.sample(frac=1, random_state=seed).to_csv(root / "labels.csv", index=False)
    test = write_images("test", test_per_class)
    test_ids = test["id"].sample(frac=1, random_state=seed + 1).to_numpy()
    sample = pd.DataFrame(1 / classes, index=range(len(test_ids)), columns=sorted(breeds))
    sample.insert(0, "id", test_ids)
    sample.to_csv(root / "sample_submission.csv", index=False)
    test.to_csv(Path(out) / TEST_ANSWERS, index=False)
    return root


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="input_stub", help="folder to write (default: input_stub)")
    parser.add_argument("--classes", type=int, default=120)
    parser.add_argument("--train-per-class", type=int, default=6)
    parser.add_argument("--test-per-class", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    root = make_stub(args.out, args.classes, args.train_per_class, args.test_per_class, args.seed)
    print(f"wrote {root}")


if __name__ == "__main__":
    main()
