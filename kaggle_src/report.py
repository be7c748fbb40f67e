"""A run's account: metrics.json's content, gathered from what the stages returned, and report.md, a short
reading of it: one line on the submitted option, the ensembling options' out-of-fold scores, the breeds most
often mistaken for each other, links to the pictures, and the time per stage."""
import math

import numpy as np

from .ensembles import NOISE_STANDARD_ERRORS, OPTIONS, best, score_predictions


def cv_metrics(competition, failed, labels, heads, oof, options, chosen, config):
    """What the cross-validation found: out-of-fold scores per view's heads and for the submitted option (as
    `ensemble`); every option's scores; the `chosen` option, the best out of fold (the same unless the ensemble
    setting named another or a preferred one was within the noise of it) and its log loss below heads_mean's;
    each head's validation scores; the breed pairs it confused most; the unreadable images by id (`failed`: their
    indices per split); and the counts.

    `labels` are the readable training images' classes; `heads` and `oof` the softmax heads and their
    out-of-fold predictions (head views, views, n, classes).
    """
    n_classes, views = len(competition.classes), config.views
    per_view = {name: score_predictions(oof[index, index], labels, n_classes) for index, name in enumerate(views)}
    baseline = next(scored for scored in options if scored.option.name == "heads_mean")
    return {
        "oof": {**per_view, "ensemble": {"log_loss": chosen.log_loss, "accuracy": chosen.accuracy}},
        "options": {scored.option.name: scored.scores() for scored in options},
        "chosen": {
            "option": chosen.option.name,
            "best_out_of_fold": best(options).option.name,
            "set_by_ensemble": bool(config.ensemble),  # else the preferred one within the noise of the best
            "improvement_over_heads_mean": baseline.log_loss - chosen.log_loss,
        },
        "folds": [
            {
                "fold": head.fold,
                "view": views[head.view],
                "epochs": head.epochs,
                "log_loss": head.val_log_loss,
                "accuracy": head.val_accuracy,
            }
            for head in heads
        ],
        "confused": confused_pairs(chosen.oof, labels, competition.classes),
        "unreadable": {split: [competition.ids(split)[index] for index in failed[split]] for split in failed},
        "counts": {
            "train_images": len(competition.train_ids),
            "test_images": len(competition.test_ids),
            "classes": n_classes,
            "folds": config.n_folds,
            "views": len(views),
            "heads": len(heads),
            "features": int(heads[0].kernel.shape[0]),
        },
        "chance_log_loss": math.log(n_classes),
    }


def run_metrics(cv, seconds, runtime, config, build):
    """metrics.json's content: a one-line summary, then the cross-validation's `cv` (cv_metrics), the `seconds`
    per stage, the `runtime`, the config, whether it was a smoke run and, for a built kernel, the `build`."""
    metrics = {**cv, "seconds": seconds, "runtime": runtime, "config": config.as_dict()}
    if config.smoke:
        metrics["smoke"] = config.smoke
    if build is not None:
        metrics["build"] = build
    return {"summary": summary_line(metrics), **metrics}


def confused_pairs(probabilities, labels, classes, top=10):
    """The `top` breed pairs most often mistaken for each other out of fold, both directions summed, most first."""
    counts = np.zeros((len(classes), len(classes)), np.int64)
    np.add.at(counts, (labels, np.asarray(probabilities).argmax(axis=1)), 1)
    np.fill_diagonal(counts, 0)
    first, second = np.triu_indices(len(classes), 1)
    both = counts[first, second] + counts[second, first]
    order = [index for index in np.argsort(-both, kind="stable") if both[index]][:top]
    return [
        {
            "breeds": [classes[first[index]], classes[second[index]]],
            "count": int(both[index]),
            "first_as_second": int(counts[first[index], second[index]]),
            "second_as_first": int(counts[second[index], first[index]]),
        }
        for index in order
    ]


def summary_line(metrics):
    """The run in one line, as metrics.json and report.md open: the submitted option, its out-of-fold log loss
    and accuracy, and the wall time; a smoke run says first that it is one."""
    option = metrics["chosen"]["option"]
    scores = metrics["options"][option]
    smoke = (f"SMOKE RUN, {metrics['smoke']} images per breed, no submission.csv: "
             if metrics.get("smoke") else "")
    return (
        f"{smoke}submitted {option}: out-of-fold log loss {scores['log_loss']:.4f}, accuracy {scores['accuracy']:.3f}; "
        f"{metrics['seconds']['total']:.0f} s"
    )


def report_markdown(metrics):
    """The report's text, from a run's metrics (as metrics.json holds them)."""
    chosen, options, counts = metrics["chosen"], metrics["options"], metrics["counts"]
    descriptions = {option.name: option.description for option in OPTIONS}
    baseline, gain = options["heads_mean"]["log_loss"], chosen["improvement_over_heads_mean"]
    set_by = (
        "" if chosen["option"] == chosen["best_out_of_fold"]
        else f" (set by --ensemble; the best out of fold is {chosen['best_out_of_fold']})" if chosen["set_by_ensemble"]
        else f" (the preferred fixed recipe within {NOISE_STANDARD_ERRORS:g} standard error of the best one out of "
             f"fold; the lowest of all: {chosen['best_out_of_fold']})"
    )
    lines = [
        f"# {summary_line(metrics)}",
        "",
        f"## Ensembling options, out of fold ({counts['train_images']} training images, {counts['folds']} folds)",
        "",
        "| option | what | log loss | accuracy |",
        "| --- | --- | --- | --- |",
        *(
            f"| {_bold(name, name == chosen['option'])} | {descriptions[name]}"
            + (f" (T = {scores['temperature']:.3f})" if "temperature" in scores else "")
            + (" (" + ", ".join(f"{option} {weight:.2f}" for option, weight in scores["weights"].items()
                               if weight >= 0.005) + ")" if "weights" in scores else "")
            + f" | {scores['log_loss']:.4f} | {scores['accuracy']:.4f} |"
            for name, scores in options.items()
        ),
        "",
        f"Submitted: **{chosen['option']}**{set_by}, out-of-fold log loss {options[chosen['option']]['log_loss']:.4f}, "
        f"{abs(gain):.4f} ({100 * abs(gain) / baseline:.1f}%) {'below' if gain >= 0 else 'above'} heads_mean, the "
        f"seed's heads ({baseline:.4f}). Chance: {metrics['chance_log_loss']:.4f}.",
        "",
        f"## Most-confused breed pairs ({chosen['option']}, out of fold)",
        "",
        *(
            [
                "| breeds | mistaken | first as second | second as first |",
                "| --- | --- | --- | --- |",
                *(
                    f"| {pair['breeds'][0]} / {pair['breeds'][1]} | {pair['count']} | {pair['first_as_second']} "
                    f"| {pair['second_as_first']} |"
                    for pair in metrics["confused"]
                ),
            ]
            if metrics["confused"]
            else ["None: every out-of-fold prediction's top breed is the true one."]
        ),
        "",
        "## Pictures",
        "",
        *picture_lines(metrics["pictures"]),
        "",
        "## Time per stage",
        "",
        "| stage | seconds |",
        "| --- | --- |",
        *(f"| {name} | {seconds:.1f} |" for name, seconds in metrics["seconds"].items()),
        "",
        "Images load in background threads while features are extracted, so load_images overlaps "
        "extract_features, and total (the wall time) is not the stages' sum.",
    ]
    return "\n".join(lines) + "\n"


def picture_lines(pictures):
    """report.md's links to the pictures (pictures.draw_pictures), each after a line on what it shows."""
    mistakes, confused, calibration = pictures["mistakes"], pictures["confused"], pictures["calibration"]
    lines = []
    if mistakes:
        mistaken = sum(photo["predicted"] != photo["breed"] for photo in mistakes["photos"])
        lines += [f"The {len(mistakes['photos'])} training photos of the highest out-of-fold log loss, {mistaken} "
                  f"mistaken: the label or the model? ![mistakes]({mistakes['file']})", ""]
    else:
        lines += ["No photo sheets: no training photo could be read.", ""]
    if confused:
        lines += [f"The {len(confused['pairs'])} most-confused breed pairs, the photos of each most taken for the "
                  f"other first: ![confused]({confused['file']})", ""]
    elif mistakes:
        lines += ["No sheet of confused breeds: none was taken for another.", ""]
    return [*lines, f"Calibration out of fold, confidence against accuracy (expected calibration error "
                    f"{calibration['expected_calibration_error']:.3f}): ![calibration]({calibration['file']})"]


def _bold(text, bold):
    return f"**{text}** (submitted)" if bold else text
