"""report.md, a short account of a run read from its metrics: one line on the submitted option, the
ensembling options' out-of-fold scores, the breeds most often mistaken for each other, and the time per stage."""
import numpy as np

from .ensembles import OPTIONS


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
    seed_log_loss, gain = options["seed"]["log_loss"], chosen["improvement_over_seed"]
    set_by = (
        "" if chosen["option"] == chosen["best_out_of_fold"]
        else f" (set by --ensemble; the best out of fold is {chosen['best_out_of_fold']})"
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
        f"{abs(gain):.4f} ({100 * abs(gain) / seed_log_loss:.1f}%) {'below' if gain >= 0 else 'above'} the seed's "
        f"heads ({seed_log_loss:.4f}). Chance: {metrics['chance_log_loss']:.4f}.",
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


def _bold(text, bold):
    return f"**{text}** (submitted)" if bold else text
