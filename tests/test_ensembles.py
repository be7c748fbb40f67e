import math

import numpy as np

from kaggle_src.config import make_config
from kaggle_src.ensembles import (
    OPTIONS, PREFERENCE, ScoredOption, best, choose, combine, cross_fit_temperature, fit_blend_weights, fit_temperature, scale, score_options,
    scored_names,
)
from kaggle_src.train_heads import make_folds


def probabilities(rng, *shape):
    values = rng.gamma(1.0, size=shape)
    return values / values.sum(axis=-1, keepdims=True)


def log_loss(p, labels):
    return -np.mean(np.log(p[np.arange(len(labels)), labels]))


def geometric(members):
    g = np.exp(np.log(members).mean(axis=0))
    return g / g.sum(axis=-1, keepdims=True)


def softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_each_option_combines_its_members_and_is_scored_out_of_fold():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 12)
    folds = make_folds(labels, make_config(n_folds=4, seed=0))
    oof, test = probabilities(rng, 2, 2, 36, 3), probabilities(rng, 4, 2, 2, 5, 3)  # (folds,) head views, views, rows
    logistic_oof, logistic_test = probabilities(rng, 1, 2, 36, 3), probabilities(rng, 4, 1, 2, 5, 3)
    predictions = {"heads": (oof, test), "logistic": (logistic_oof, logistic_test)}
    scored = {s.option.name: s for s in score_options(predictions, labels, folds)}
    assert list(scored) == [option.name for option in OPTIONS]
    own_test = np.concatenate([test[:, 0, 0], test[:, 1, 1]])  # every fold's heads, each on its own view
    all_test = test.reshape(-1, 5, 3)
    expected = {
        "heads_mean": ((oof[0, 0] + oof[1, 1]) / 2, own_test.mean(axis=0)),
        "geometric": (geometric(oof[[0, 1], [0, 1]]), geometric(own_test)),
        "tta": (oof.mean(axis=(0, 1)), all_test.mean(axis=0)),
        "tta_geometric": (geometric(oof.reshape(4, 36, 3)), geometric(all_test)),
        "logistic": (logistic_oof[0, 0], logistic_test[:, 0, 0].mean(axis=0)),
    }
    for name, (expected_oof, expected_test) in expected.items():
        np.testing.assert_allclose(scored[name].oof, expected_oof, rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(scored[name].test, expected_test, rtol=1e-6, err_msg=name)
        assert math.isclose(scored[name].log_loss, log_loss(expected_oof, labels), rel_tol=1e-6), name
        assert scored[name].accuracy == (expected_oof.argmax(axis=1) == labels).mean(), name
        assert scored[name].temperature is None and "temperature" not in scored[name].scores()
    both = scored["heads_logistic"]  # the two families' fixed recipes, geometric mean of the pair
    for ours, heads, logistic in ((both.oof, *[expected[n][0] for n in ("tta_geometric", "logistic")]),
                                  (both.test, *[expected[n][1] for n in ("tta_geometric", "logistic")])):
        np.testing.assert_allclose(ours, geometric(np.stack([heads, logistic])), rtol=1e-6)
    assert math.isclose(both.log_loss, log_loss(both.oof, labels), rel_tol=1e-6)
    one_view = {s.option.name: s for s in score_options(
        {"heads": (oof[:1, :1], test[:, :1, :1]), "logistic": (logistic_oof[:, :1], logistic_test[:, :, :1])},
        labels, folds)}
    np.testing.assert_allclose(one_view["heads_logistic"].oof,
                               geometric(np.stack([one_view["geometric"].oof, one_view["logistic"].oof])), rtol=1e-6)
    tempered = scored["tta_geometric_temperature"]
    temperature = fit_temperature(expected["tta_geometric"][0], labels)
    assert tempered.temperature == temperature and tempered.scores()["temperature"] == temperature
    np.testing.assert_allclose(tempered.test, scale(expected["tta_geometric"][1], temperature), rtol=1e-6)
    cross_fitted = cross_fit_temperature(expected["tta_geometric"][0], labels, folds)
    np.testing.assert_allclose(tempered.oof, cross_fitted, rtol=1e-6)
    assert math.isclose(tempered.log_loss, log_loss(tempered.oof, labels), rel_tol=1e-6)


def test_the_lowest_out_of_fold_log_loss_wins_and_brings_its_test_predictions():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 200)
    folds = make_folds(labels, make_config(n_folds=5, seed=1))

    informed = probabilities(rng, 1, 2, 200, 4) * 0.2
    informed[..., np.arange(200), labels] += 0.8  # 0.8 and more on the true class, where the heads know nothing
    heads = (probabilities(rng, 2, 2, 200, 4), probabilities(rng, 5, 2, 2, 7, 4))
    logistic = (informed, probabilities(rng, 5, 1, 2, 7, 4))
    scored = score_options({"heads": heads, "logistic": logistic}, labels, folds)
    chosen = best(scored)
    assert chosen.option.name == "logistic"
    assert chosen.log_loss == min(s.log_loss for s in scored) < scored[0].log_loss
    np.testing.assert_allclose(chosen.test, logistic[1][:, 0, 0].mean(axis=0), rtol=1e-6)
    assert choose(scored, labels, make_config()) is chosen  # no ensemble setting: the best, far beyond the noise
    assert choose(scored, labels, make_config(ensemble="heads_mean")) is scored[0]  # the ensemble setting
    assert choose(scored, labels, make_config(ensemble="tta")).option.name == "tta"


def test_the_names_of_the_options_scored_are_those_score_options_gives():
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 3, 30)
    folds = make_folds(labels, make_config(n_folds=3, seed=6))
    for views in (1, 2):
        for logistic in (False, True):
            heads = (probabilities(rng, views, views, 30, 3), probabilities(rng, 3, views, views, 4, 3))
            predictions = {"heads": heads}
            if logistic:
                predictions["logistic"] = (probabilities(rng, 1, views, 30, 3), probabilities(rng, 3, 1, views, 4, 3))
            scored = [s.option.name for s in score_options(predictions, labels, folds)]
            assert scored_names(flips=views == 2, logistic=logistic) == scored


def test_a_tie_goes_to_the_earlier_option():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 30)
    same = probabilities(rng, 1, 1, 30, 3)  # one view: heads_mean and geometric are the same prediction
    folds = make_folds(labels, make_config(n_folds=3, seed=2))
    scored = score_options({"heads": (same, probabilities(rng, 3, 1, 1, 4, 3))}, labels, folds)
    assert [s.option.name for s in scored] == ["heads_mean", "geometric", "blend"]  # no tta with one view, no logistic
    assert best(scored).option.name == "heads_mean"


def test_geometric_mean_is_renormalised_to_rows_summing_to_one():
    rng = np.random.default_rng(3)
    members = probabilities(rng, 4, 10, 6)
    combined = combine(members, geometric=True)
    np.testing.assert_allclose(combined.sum(axis=1), 1, rtol=1e-12)
    np.testing.assert_allclose(combined, geometric(members), rtol=1e-10)
    assert not np.allclose(combined, combine(members, geometric=False), atol=1e-3)
    np.testing.assert_allclose(combine(members, geometric=False), members.mean(axis=0), rtol=1e-12)


def test_temperature_fixes_over_confidence_and_leaves_calibrated_predictions_alone():
    rng = np.random.default_rng(4)
    logits = rng.normal(0, 2, (6000, 5))
    calibrated = softmax(logits)
    labels = (calibrated.cumsum(axis=1) < rng.random((6000, 1))).sum(axis=1)  # drawn from the predictions
    folds = make_folds(labels, make_config(n_folds=5, seed=4))
    assert abs(fit_temperature(calibrated, labels) - 1) < 0.08
    over_confident = softmax(3 * logits)
    assert abs(fit_temperature(over_confident, labels) - 3) < 0.25
    scaled = cross_fit_temperature(over_confident, labels, folds)
    assert log_loss(scaled, labels) < 0.75 * log_loss(over_confident, labels)
    assert abs(log_loss(scaled, labels) - log_loss(calibrated, labels)) < 0.01
    unchanged = cross_fit_temperature(calibrated, labels, folds)
    assert abs(log_loss(unchanged, labels) - log_loss(calibrated, labels)) < 0.005


def test_cross_fitting_scales_each_fold_with_a_temperature_fitted_on_the_other_folds():
    rng = np.random.default_rng(5)
    logits = rng.normal(0, 2, (3000, 5))
    labels = (softmax(logits).cumsum(axis=1) < rng.random((3000, 1))).sum(axis=1)
    folds = make_folds(labels, make_config(n_folds=5, seed=5))
    first = folds[0][1]
    predictions = softmax(logits)
    predictions[first] = softmax(4 * logits[first])  # only the first fold is over-confident
    scaled = cross_fit_temperature(predictions, labels, folds)
    np.testing.assert_allclose(scaled[first], predictions[first], atol=0.05)  # the others say T is about 1
    assert fit_temperature(predictions[first], labels[first]) > 3  # fitted on its own rows, it would have changed


def test_blend_weights_maximise_the_likelihood_of_the_true_classes():
    rng = np.random.default_rng(7)
    truth = np.stack([rng.uniform(0.2, 0.9, 500), rng.uniform(0.05, 0.95, 500)])  # two options' p(true class)
    weights = fit_blend_weights(truth)
    assert weights.shape == (2,) and math.isclose(weights.sum(), 1) and (weights >= 0).all()
    grid = np.linspace(0, 1, 1001)
    best = grid[np.argmax([np.log(w * truth[0] + (1 - w) * truth[1]).mean() for w in grid])]
    assert abs(weights[0] - best) < 2e-3
    assert fit_blend_weights(np.stack([truth[0], truth[0] * 0.5]))[0] > 0.999  # a dominated option gets nothing


def test_the_blend_is_cross_fitted_and_its_test_weights_fitted_on_every_row():
    rng = np.random.default_rng(8)
    labels = rng.integers(0, 4, 120)
    folds = make_folds(labels, make_config(n_folds=4, seed=8))
    heads = (probabilities(rng, 2, 2, 120, 4), probabilities(rng, 4, 2, 2, 9, 4))
    logistic = (probabilities(rng, 1, 2, 120, 4), probabilities(rng, 4, 1, 2, 9, 4))
    scored = score_options({"heads": heads, "logistic": logistic}, labels, folds)
    *others, blend = scored
    assert blend.option.name == "blend"
    truth = np.stack([other.oof[np.arange(120), labels] for other in others])
    for train_index, validation_index in folds:
        weights = fit_blend_weights(truth[:, train_index])
        expected = sum(w * other.oof[validation_index] for w, other in zip(weights, others))
        np.testing.assert_allclose(blend.oof[validation_index], expected, rtol=1e-9)
    weights = fit_blend_weights(truth)
    np.testing.assert_allclose(blend.test, sum(w * other.test for w, other in zip(weights, others)), rtol=1e-9)
    assert blend.scores()["weights"] == {other.option.name: float(w) for other, w in zip(others, weights)}
    assert math.isclose(blend.log_loss, log_loss(blend.oof, labels), rel_tol=1e-9)
    np.testing.assert_allclose(blend.oof.sum(axis=1), 1, rtol=1e-9)


def test_another_option_is_chosen_over_a_preferred_one_only_when_it_wins_by_more_than_one_standard_error():
    """The one-standard-error rule on the per-image difference: a lead within the noise goes to the fixed recipe first
    in PREFERENCE (tta before logistic). The fitted options (a temperature, the blend) are never chosen unless named,
    however far they lead out of fold."""
    labels = np.random.default_rng(9).integers(0, 2, 400)
    simple = np.full((400, 2), 0.3)
    simple[np.arange(400), labels] = 0.7
    options = {option.name: option for option in OPTIONS}

    def scored(option, oof):
        return ScoredOption(options[option], oof, oof[:3], log_loss(oof, labels), 1.0)

    perfect = np.eye(2)[labels] * 0.98 + 0.01
    for shift, expected in ((0.0, "tta"), (0.01, "tta"), (0.02, "logistic")):
        fitted = simple.copy()
        moved = np.tile([0.1, -0.1], 200) + shift  # per image: noise of 0.1 either way, a lead of `shift`
        fitted[np.arange(400), labels] += moved
        fitted[np.arange(400), 1 - labels] -= moved
        candidates = [scored("tta", simple), scored("logistic", fitted), scored("blend", perfect),
                      scored("tta_geometric_temperature", perfect)]
        lead = np.log(fitted[np.arange(400), labels]) - np.log(simple[np.arange(400), labels])  # per image
        assert (lead.mean() > lead.std() / math.sqrt(400)) == (expected == "logistic")  # the case is what its name says
        assert best(candidates).option.name == "blend"
        assert choose(candidates, labels, make_config()).option.name == expected
        assert choose(candidates, labels, make_config(ensemble="blend")).option.name == "blend"
    assert PREFERENCE.index("tta") < PREFERENCE.index("logistic")
    assert sorted(PREFERENCE) == sorted(option.name for option in OPTIONS if not option.temperature
                                        and option.family != "options")
