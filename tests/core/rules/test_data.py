"""The data-signal rule (`diagnose.core.rules.data`): no signal in the pairs, told apart from a signal
the run did not learn."""

from __future__ import annotations

import math

import pandas as pd

from diagnose.core.rules import rank_root_causes
from diagnose.core.rules.base import RunContext
from diagnose.core.rules.data import PROBE, NoDataSignal


def _records(significant: bool, loss: float, r1: float = 0.9) -> pd.DataFrame:
    rows = [(0, PROBE, "pairs", m, v) for m, v in {
        "r@1": r1 if significant else 0.008, "chance@1": 1 / 128, "p_value": 0.001 if significant else 0.4,
        "significant": float(significant), "detectable_r@1": 0.03, "n_test": 128,
                                                   "hits": 100 if significant else 1}.items()]
    rows += [(s, "loss_split", "loss_clip", m,
              v) for s in range(20) for m, v in (("value", loss), ("chance", math.log(64)))]
    return pd.DataFrame(rows, columns=["step", "probe", "target", "metric", "value"])


def test_rule_tells_no_signal_apart_from_signal_not_learned():
    rule, ctx = NoDataSignal(), RunContext("r", batch_size=64)
    at_chance, learned = math.log(64), 0.2
    (f,) = rule(_records(False, at_chance), ctx)
    assert (f.id, f.severity) == ("no_data_signal", "error")
    causes = rank_root_causes([f.to_dict()], {"learned": False})
    assert causes[0]["cause"] == "misaligned_pairs" and causes[0]["tier"] == 1
    (w,) = rule(_records(False, learned), ctx)
    assert (w.id, w.severity) == ("no_data_signal", "warning")  # the model found something a linear map did not
    (i,) = rule(_records(True, at_chance), ctx)
    assert (i.id, i.severity) == ("data_signal_present", "info")
    assert rank_root_causes([i.to_dict()], {"learned": False})[0]["cause"] == "unexplained"  # info implicates nothing
    assert rule(_records(True, learned), ctx) == []


def _pairs(margin: float, n: int = 12, loss: float = math.log(64), cos: float = 0.4, sd: float = 0.02):
    import numpy as np

    rng = np.random.default_rng(0)
    null = 0.1 + sd * rng.normal(size=n)
    paired = null + margin + sd * rng.normal(size=n)
    rows = [(s, "contrastive", "pairs", "cka", float(paired[s])) for s in range(n)]
    rows += [(s, "contrastive", "pairs", "cka_null", float(null[s])) for s in range(n)]
    rows += [(s, "collapse", side, "cosine_mean", cos) for s in range(n) for side in ("image", "text")]
    rows += [(s, "loss_split", "loss_clip", m, v) for s in range(n)
             for m, v in (("value", loss), ("chance", math.log(64)))]
    return pd.DataFrame(rows, columns=["step", "probe", "target", "metric", "value"])


def test_pairs_unrelated_fires_without_a_paired_margin_and_not_with_one():
    from diagnose.core.rules.data import PairsUnrelated

    ctx = RunContext("r", batch_size=64)
    [f] = PairsUnrelated()(_pairs(0.0), ctx)
    assert f.id == "pairs_unrelated" and f.evidence["observations"] == 12
    assert rank_root_causes([f.to_dict()], {"learned": False})[0]["cause"] == "misaligned_pairs"
    # near misses: a paired margin (matching pairs through random towers); a run that learned;
    # collapsed embeddings (the structure is lost whatever the data); too few observations
    assert PairsUnrelated()(_pairs(0.08), ctx) == []
    assert PairsUnrelated()(_pairs(0.0, loss=0.3 * math.log(64)), ctx) == []
    assert PairsUnrelated()(_pairs(0.0, n=5), ctx) == []
    # collapsed embeddings after the weights moved by their own norm (a too-high lr erases the structure
    # whatever the data): no reading
    assert PairsUnrelated()(_moved(_pairs(0.0, cos=0.99), 0.5), ctx) == []


def test_pairs_unrelated_reads_the_first_steps_where_a_margin_grows_only_later():
    """A fixed wrong pairing is a set of arbitrary labels the towers memorise: no margin over the first steps (where
    matching pairs show theirs through random towers), one growing later while the loss stays at chance. The first
    PAIRS_EARLY_OBS steps decide; a margin there from the start (matching pairs) leaves no finding."""
    from diagnose.core.rules.data import PAIRS_EARLY_OBS, PairsUnrelated

    ctx = RunContext("r", batch_size=64)
    n = 150
    late = _pairs(0.0, n=n)
    grown = (late["metric"] == "cka") & (late["step"] >= 40)
    late.loc[grown, "value"] += 0.08  # memorised: a margin from step 40 on
    [f] = PairsUnrelated()(late, ctx)
    assert f.evidence["reading"] == "first_steps" and f.evidence["observations"] == PAIRS_EARLY_OBS
    assert f.evidence["margin_whole_run"] > 0.04 and "memorise" in f.message
    assert PairsUnrelated()(_pairs(0.08, n=n), ctx) == []  # matching pairs: a margin from the first step
    early_only = _pairs(0.0, n=n)
    early_only.loc[(early_only["metric"] == "cka") & (early_only["step"] < 10), "value"] += 0.3
    assert PairsUnrelated()(early_only, ctx) == []  # a margin in the first steps is shared structure


def _moved(df: pd.DataFrame, per_step: float) -> pd.DataFrame:
    steps = sorted(df.step.unique())
    return pd.concat([df, pd.DataFrame([(s, "gradient_flow.model", "model", "update_to_param", per_step)
                                        for s in steps], columns=df.columns)], ignore_index=True)


def test_pairs_unrelated_reads_collapsed_steps_before_the_weights_moved_by_their_norm():
    """Rows crowded around one vector (cosine 0.99) with the weights 1% per step from where they started:
    centred CKA still reads the pairs. Once the weights moved by their norm, collapsed steps are not read."""
    from diagnose.core.rules.data import HEALTHY_MIN_MARGIN, PairsUnrelated

    ctx = RunContext("r", batch_size=64)
    crowded = _moved(_pairs(0.0, cos=0.99), 0.01)
    [f] = PairsUnrelated()(crowded, ctx)
    assert f.evidence["reading"] == "per_step" and f.evidence["collapsed_unmoved_observations"] == 12
    assert "collapsed (12 steps) before the weights moved" in f.message
    assert PairsUnrelated().alarm(f, crowded) is True  # at chance, not falling, over 12 readable steps
    # near misses: matching pairs give collapsed rows their margin too; steps after the weights moved are
    # dropped (0.2 per step: moved at step 4, four readable steps left, fewer than PAIRS_MIN_OBS)
    assert PairsUnrelated()(_moved(_pairs(0.08, cos=0.99), 0.01), ctx) == []
    # a noisy collapsed reading (a small batch): no margin shown, but none shown below a healthy run's either
    noisy = _moved(_pairs(0.0, cos=0.99, sd=0.15), 0.01)
    assert PairsUnrelated()(noisy, ctx) == []
    # ... while the same noise on spread-out rows is read as before (not shown above zero)
    assert PairsUnrelated()(_pairs(0.0, sd=0.15), ctx)[0].evidence["margin_upper_bound"] >= HEALTHY_MIN_MARGIN
    assert PairsUnrelated()(_moved(_pairs(0.0, cos=0.99), 0.2), ctx) == []


def test_pairs_unrelated_on_spread_embeddings_alarms_without_waiting_for_the_weights():
    from diagnose.core.rules.data import PairsUnrelated

    ctx = RunContext("r", batch_size=64)
    flat = _pairs(0.0, sd=0.0)  # 12 spread-out steps at chance without a paired margin, no update records
    [f] = PairsUnrelated()(flat, ctx)
    assert f.evidence["spread_observations"] == 12 and PairsUnrelated().alarm(f, flat) is True
    # near misses: a loss that falls over those steps; a loss below the chance band at one step
    falling = flat.copy()
    value = (falling.probe == "loss_split") & (falling.metric == "value")
    falling.loc[value, "value"] = [math.log(64) * (1.02 - 0.004 * s) for s in falling.loc[value, "step"]]
    [g] = PairsUnrelated()(falling, ctx)
    assert PairsUnrelated().alarm(g, falling) is False
    dipped = flat.copy()
    dipped.loc[value & (dipped.step == 8), "value"] = 0.9 * math.log(64)
    [h] = PairsUnrelated()(dipped, ctx)
    assert PairsUnrelated().alarm(h, dipped) is False


def test_pairs_unrelated_first_step_reading_alarms_only_once_the_state_persisted():
    from diagnose.core.rules.data import PairsUnrelated

    ctx = RunContext("r", batch_size=64)
    early = _first(-0.4)  # embeddings alike from the start: the weak first-step reading, weights not moved
    [f] = PairsUnrelated()(early, ctx)
    assert f.evidence["spread_observations"] == 0 and PairsUnrelated().alarm(f, early) is False
    moved = pd.concat([_first(-0.4, n=40), pd.DataFrame(
        [(s, "gradient_flow.model", "model", "update_to_param", 0.2) for s in range(40)],
        columns=["step", "probe", "target", "metric", "value"])], ignore_index=True)
    [g] = PairsUnrelated()(moved, ctx)
    assert PairsUnrelated().alarm(g, moved) is True


def _first(z: float, cos: float = 0.99, n: int = 12, loss: float = math.log(64)):
    """The first step's permutation test with no readable per-step CKA (collapsed rows give NaN readings)."""
    first = pd.DataFrame([(0, "pairs_first", "pairs", m, v) for m, v in
                          (("cka", 0.1 + 0.02 * z), ("null_mean", 0.1), ("null_sd", 0.02), ("z", z))],
                         columns=["step", "probe", "target", "metric", "value"])
    per_step = _pairs(0.0, n=n, cos=cos, loss=loss)
    per_step.loc[per_step.metric == "cka", "value"] = float("nan")
    return pd.concat([per_step, first], ignore_index=True)


def test_pairs_unrelated_reads_the_first_step_when_no_step_is_spread_out():
    from diagnose.core.rules.data import PairsUnrelated

    ctx = RunContext("r", batch_size=64)
    [f] = PairsUnrelated()(_first(-0.4), ctx)  # alike from the start: only the first step's permutation test
    assert f.evidence["z"] == -0.4 and f.evidence["spread_observations"] == 0 and f.severity == "error"
    # near misses: a first-step margin (matching pairs through random towers); a run that learned; too short
    assert PairsUnrelated()(_first(2.5), ctx) == []
    assert PairsUnrelated()(_first(-0.4, loss=0.3 * math.log(64)), ctx) == []
    assert PairsUnrelated()(_first(-0.4, n=5), ctx) == []
    # spread-out steps with a margin: the per-step reading decides, not the first step
    assert PairsUnrelated()(pd.concat([_pairs(0.08), _first(-0.4).query("probe == 'pairs_first'")]), ctx) == []


def test_pairs_unrelated_first_step_not_read_when_a_tower_discards_its_input():
    from diagnose.core.rules.data import PairsUnrelated

    df = _first(-0.4)
    df.loc[(df.probe == "collapse") & (df.target == "text") & (df.step == 0), "value"] = 1.0  # identical rows
    assert PairsUnrelated()(df, RunContext("r", batch_size=64)) == []


def test_pairs_unrelated_reads_no_step_where_one_side_s_rows_are_copies():
    """A LayerNorm over one channel gives every image the same embedding from the first step: copies carry no
    structure, paired or re-paired (margin 0 whatever the pairing); those steps read nothing, even before the weights
    moved. Rows crowded around one vector (0.99) but not copies are still read."""
    from diagnose.core.rules.data import PairsUnrelated

    ctx = RunContext("r", batch_size=64)
    copies = _pairs(0.0, cos=0.4)
    copies.loc[(copies.probe == "collapse") & (copies.target == "image"), "value"] = 1.0
    assert PairsUnrelated()(copies, ctx) == []
    assert PairsUnrelated()(_moved(_pairs(0.0, cos=0.99), 0.01), ctx) != []


def test_pairs_unrelated_ranks_before_the_copies_among_captions_that_belong_to_no_image():
    # captions that are the same few strings whatever the image: copies in every batch (false_negatives, tier 1)
    # and no pair structure (pairs_unrelated, tier 2); masking the copies would leave a problem at chance, so the
    # pairs come first
    from diagnose.core.findings import Finding

    copies = Finding("false_negatives", "error", "r", "m", {}, "", "text")
    pairs = Finding("pairs_unrelated", "error", "r", "m", {}, "", "pairs")
    causes = [c["cause"] for c in rank_root_causes([copies.to_dict(), pairs.to_dict()], {"learned": False})]
    assert causes[:2] == ["misaligned_pairs", "false_negatives"]
    # near miss: copies alone (captions tied to their images keep a pair margin: no pairs_unrelated) stay first
    assert rank_root_causes([copies.to_dict()], {"learned": False})[0]["cause"] == "false_negatives"


def _broken(margins, updates, loss: float = math.log(64)) -> pd.DataFrame:
    """Pairs whose CKA margin per step is `margins`, the model's update/param per step `updates`."""
    import numpy as np

    n = len(margins)
    rng = np.random.default_rng(1)
    null = 0.1 + 0.02 * rng.normal(size=n)
    paired = null + np.asarray(margins) + 0.02 * rng.normal(size=n)
    rows = [(s, "contrastive", "pairs", "cka", float(paired[s])) for s in range(n)]
    rows += [(s, "contrastive", "pairs", "cka_null", float(null[s])) for s in range(n)]
    rows += [(s, "collapse", side, "cosine_mean", 0.5) for s in range(n) for side in ("image", "text")]
    rows += [(s, "gradient_flow.model", "model", "update_to_param", float(updates[s])) for s in range(n)]
    rows += [(s, "loss_split", "loss_clip", m, v) for s in range(n)
             for m, v in (("value", loss), ("chance", math.log(64)))]
    return pd.DataFrame(rows, columns=["step", "probe", "target", "metric", "value"])


def test_pairs_unrelated_reads_a_pairing_that_broke_at_a_step_that_hardly_moved_the_model():
    """A cache of the first epoch's batches read back under the next epoch's shuffle: a margin of 0.3 for 16 steps,
    none from step 16 on, across a step that moved the weights as little as any other."""
    from diagnose.core.rules.data import PairsUnrelated

    rule, ctx = PairsUnrelated(), RunContext("r", batch_size=64)
    df = _broken([0.3] * 16 + [0.0] * 64, [0.003] * 80)
    f = [f for f in rule.check(df, ctx) if f.id == "pairs_unrelated"][0]
    assert f.evidence["reading"] == "broke" and f.evidence["last_step_with_margin"] == 15
    assert f.evidence["steps"][0] == 16 and abs(f.evidence["margin_before"] - 0.3) < 0.05
    assert f.evidence["moved_across_break"] < f.evidence["moved_in_window_before"]
    assert rule.alarm(f, df)
    # near misses: the step at the break moved the weights more than the window before it (a model that lost its
    # structure by moving); a margin that fades over 40 steps; a margin that comes back; a run that learned
    jump = [0.003] * 15 + [0.5] + [0.003] * 64
    assert rule.check(_broken([0.3] * 16 + [0.0] * 64, jump), ctx) == []
    fade = [0.3] * 16 + [0.3 * (1 - i / 40) for i in range(40)] + [0.0] * 24
    assert rule.check(_broken(fade, [0.003] * 80), ctx) == []
    back = [0.3] * 16 + [0.0] * 20 + [0.3] * 44
    assert rule.check(_broken(back, [0.003] * 80), ctx) == []
    assert rule.check(_broken([0.3] * 16 + [0.0] * 64, [0.003] * 80, loss=0.3 * math.log(64)), ctx) == []
