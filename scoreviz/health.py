"""Health checks: flag collapse, instability and non-finite values in a run, and
complete and dimensional collapse of its embeddings.

Pure functions over the frames a Run returns. Each check reports whether it
fired and the first step where it did, so a user can jump to the moment a run
went wrong.

Thresholds (module constants, documented here and in the app's health panel):

collapse
    Representations collapse when every pair looks alike: for ``PERSIST``
    consecutive records either the positive mean > ``COLLAPSE_MEAN`` (0.9) and
    the negative mean > ``COLLAPSE_MEAN`` (both approach 1), or the negative
    variance < ``COLLAPSE_NEG_VAR`` (1e-4) while the positive mean >
    ``COLLAPSE_MEAN``. Negative variance is ``neg_sample_var`` (per-sample
    variance of the negatives) where recorded, else ``neg_var``. Each stretch
    of it has a start and an end step (none while it lasts to the last record).
    Warm-up rule: a stretch that starts within the first ``WARMUP_STEPS`` (1000)
    steps and ends is the start of training, not a collapse (shown, not
    flagged): a freshly initialised encoder maps every image to nearly one
    direction, which shows in the negatives once the random initial queue is
    replaced (after K/B steps), and training leaves it. Measured on the digits
    (docs/health.md): a run with FT from the first step is all alike from step 9
    (K/B = 1024/128 = 8) to step 108 (and 112-121) and then trains to 91.6% kNN
    accuracy; the demo's baseline reaches neg mean 0.80 at step 9 and leaves at once. 1000 steps covers K/B of every
    recipe of the trainer (8 for digits and CIFAR, 256 for ImageNet-100) with a
    margin; a stretch that lasts to the last record is flagged however early
    it began, so a run that never leaves it is a collapse.
instability
    A spike is a value more than ``SPIKE_FACTOR`` (10) times the running median
    of the previous ``SPIKE_WINDOW`` (50) records (at least ``SPIKE_MIN_HISTORY``
    (10) of them). Checked on the negative variance and on the total gradient
    norm; the first spike's step is reported with the number of spikes. A
    notice, not an alarm: it fires on runs that end as accurate as their best
    siblings too (docs/health_validation.md).
non-finite
    Any NaN/inf score (``pos_nonfinite`` / ``neg_nonfinite`` > 0), or a
    non-finite loss or total gradient norm. First such step reported.
complete collapse (from log_embeddings)
    The samples crowd around one point: the embedding ``std`` below
    ``COMPLETE_COLLAPSE_STD`` (0.3) / sqrt(dim) for ``COLLAPSE_RECORDS`` (20)
    records in a row (spread-out embeddings have about 1 / sqrt(dim)).
dimensional collapse (from log_embeddings)
    The embeddings span few directions: the effective rank (RankMe) below
    ``DIMENSIONAL_COLLAPSE_RANK`` (0.2) x dim for ``RANK_PERSIST`` (3) windows
    in a row, counting only windows with at least dim samples. A notice: it
    fires on healthy runs too (docs/health_validation.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

COLLAPSE_MEAN = 0.9
COLLAPSE_NEG_VAR = 1e-4
PERSIST = 5
WARMUP_STEPS = 1000
SPIKE_FACTOR = 10.0
SPIKE_WINDOW = 50
SPIKE_MIN_HISTORY = 10

THRESHOLDS_TEXT = (
    f"collapse: pos mean and neg mean both > {COLLAPSE_MEAN}, or neg variance < "
    f"{COLLAPSE_NEG_VAR:g} with pos mean > {COLLAPSE_MEAN}, for {PERSIST} consecutive records (a stretch that "
    f"starts in the first {WARMUP_STEPS} steps and ends is warm-up, not collapse); "
    f"instability (a notice: it fires on runs as accurate as their best siblings too): neg variance or total "
    f"gradient norm > {SPIKE_FACTOR:g}x the running median "
    f"of the previous {SPIKE_WINDOW} records; "
    "non-finite: any NaN/inf score, loss or gradient norm."
)


ALARM, NOTICE = "alarm", "notice"
# How loud each check is when it fires, from its record on the studies' runs (examples/health_validation.py,
# docs/health_validation.md): a check that fired on a healthy run (one within 1 point of its group's best
# kNN or linear accuracy) is a notice, "worth a look", not drawn red; one that never did is an alarm.
# Dimensional collapse fired on healthy runs by both accuracies, instability on healthy runs by linear
# accuracy (FT switched on at epoch 2, a real jump that kNN accuracy sees and the linear probe does not).
SEVERITY = {"collapse": ALARM, "instability": NOTICE, "non-finite": ALARM, "complete collapse": ALARM,
            "dimensional collapse": NOTICE}


@dataclass(frozen=True)
class ValidatedSignal:
    """A label-free signal of Run.embeddings (a column, one value per spectrum window) with how well
    its final value predicts a run's final kNN accuracy: Spearman's ``rho`` over the runs of the
    momentum and FT studies (examples/health_validation.py, docs/health_validation.md)."""

    column: str
    label: str
    rho: float

    @property
    def better(self) -> str:
        """"higher" or "lower": the direction of the signal that goes with higher accuracy."""
        return "higher" if self.rho > 0 else "lower"


# The runs behind VALIDATED_SIGNALS, and the signals of the spectrum window whose 95% bootstrap interval
# of rho with final kNN accuracy over those runs leaves out 0, with the same sign within each study
# alone, strongest first, as examples/health_validation.py prints them ("Validated ..."): the
# Representation view draws them first, in this order.
VALIDATION_RUNS = 66
VALIDATED_SIGNALS = (
    ValidatedSignal("participation_ratio", "participation ratio", 0.87),
    ValidatedSignal("nesum", "NESum", 0.86),
    ValidatedSignal("w2_uniformity", "Wasserstein uniformity", -0.86),
    ValidatedSignal("rank", "effective rank (RankMe)", 0.85),
    ValidatedSignal("lidar", "LiDAR (two views)", 0.78),
    ValidatedSignal("alpha_req", "alpha-ReQ (power-law slope)", -0.59),
)


@dataclass
class Flag:
    """One health finding: which check, whether it fired, where it began, why."""

    check: str
    fired: bool
    step: int | None = None
    detail: str = ""
    end: int | None = None      # the last step of the condition, None while it lasts to the last record
    last: int | None = None     # the run's last recorded step the check saw
    warmup: tuple | None = None  # (start, end) of a warm-up stretch that was not flagged

    @property
    def severity(self) -> str:
        """ALARM or NOTICE (SEVERITY of the check; an unknown check is an alarm)."""
        return SEVERITY.get(self.check, ALARM)

    def text(self) -> str:
        """What the health panel says: where the finding starts, and where it ended or that it lasts;
        "notice: " first for a check that fires on healthy runs too."""
        if not self.fired:
            if self.warmup:
                return (f"ok (warm-up: all alike at steps {self.warmup[0]}-{self.warmup[1]}, then left, as a "
                        f"freshly initialised encoder does)")
            return self.detail or "ok"
        why = f": {self.detail}" if self.detail else ""
        if self.end is None:
            where = f"from step {self.step}{why}; still at the last step ({self.last})" if self.last is not None \
                else f"from step {self.step}{why}"
        elif self.end == self.step:
            where = f"at step {self.step}{why}"
        else:
            where = f"steps {self.step}-{self.end}{why}; ended"
        return f"{NOTICE}: {where}" if self.severity == NOTICE else where


def first_persistent(mask: pd.Series, persist: int = PERSIST):
    """First index label where ``mask`` is True for ``persist`` records in a row."""
    values = mask.to_numpy(dtype=bool)
    if len(values) < persist or not values.any():
        return None
    # A run of `persist` Trues ends at i when the windowed sum equals persist.
    window = np.convolve(values.astype(int), np.ones(persist, dtype=int), mode="valid")
    hits = np.flatnonzero(window == persist)
    return None if len(hits) == 0 else mask.index[hits[0]]


def stretches(mask: pd.Series, persist: int = PERSIST) -> list[tuple]:
    """(first, last) index labels of every run of True in ``mask`` at least ``persist`` long; last is
    None when the run lasts to the end of ``mask``."""
    values = np.concatenate([[False], mask.to_numpy(dtype=bool), [False]])
    edges = np.flatnonzero(np.diff(values.astype(int)))
    out = []
    for begin, stop in zip(edges[::2], edges[1::2]):  # stop: one past the last True
        if stop - begin >= persist:
            out.append((mask.index[begin], None if stop == len(mask) else mask.index[stop - 1]))
    return out


def spikes(series: pd.Series, factor: float = SPIKE_FACTOR, window: int = SPIKE_WINDOW,
           min_history: int = SPIKE_MIN_HISTORY) -> pd.Series:
    """Boolean Series: True where a value is far above its running median."""
    s = series.astype(float).replace([np.inf, -np.inf], np.nan)
    level = s.rolling(window, min_periods=min_history).median().shift(1)
    return (s > factor * level) & (level > 0)


def negative_variance(scores: pd.DataFrame) -> pd.Series | None:
    """The negative-variance curve the checks use (per-sample if recorded)."""
    for column in ("neg_sample_var", "neg_var"):
        if column in scores.columns:
            return scores[column]
    return None


def check_collapse(scores: pd.DataFrame) -> Flag:
    """Positive and negative scores both near 1, or negatives all alike."""
    if scores is None or scores.empty or "pos_mean" not in scores:
        return Flag("collapse", False, detail="no scores")
    if "neg_mean" not in scores or scores["neg_mean"].isna().all():
        # positives only (BYOL, SimSiam): the embedding checks judge collapse there
        return Flag("collapse", False, detail="no negatives")
    pos_high = scores["pos_mean"] > COLLAPSE_MEAN
    both_high = pos_high & (scores.get("neg_mean", pd.Series(np.nan, scores.index)) > COLLAPSE_MEAN)
    neg_var = negative_variance(scores)
    flat = pos_high & (neg_var < COLLAPSE_NEG_VAR) if neg_var is not None else both_high & False
    last = int(scores.index[-1])
    warmup = None
    for start, end in stretches(both_high | flat):
        if end is not None and start < scores.index[0] + WARMUP_STEPS:
            warmup = warmup or (int(start), int(end))  # the start of training: shown, not flagged
            continue
        why = ("pos and neg means near 1" if both_high.loc[start:].iloc[:PERSIST].all()
               else "negative variance near 0, pos mean high")
        return Flag("collapse", True, int(start), why, end=None if end is None else int(end), last=last,
                    warmup=warmup)
    return Flag("collapse", False, last=last, warmup=warmup)


def check_instability(scores: pd.DataFrame | None, total_norm: pd.Series | None) -> Flag:
    """Spikes of negative variance or total gradient norm."""
    found = []
    neg_var = negative_variance(scores) if scores is not None and not scores.empty else None
    for label, series in (("negative variance", neg_var), ("gradient norm", total_norm)):
        if series is None or len(series) == 0:
            continue
        hit = spikes(series)
        if hit.any():
            found.append((int(hit.idxmax()), label, int(hit.sum()), int(hit[hit].index[-1])))
    if not found:
        return Flag("instability", False)
    step, label, count, _ = min(found)
    others = "; ".join(f"{lbl}: {n} spikes" for _, lbl, n, _ in found)
    return Flag("instability", True, step, f"{label} spike first ({others})", end=max(f[3] for f in found))


def check_nonfinite(scores: pd.DataFrame | None, scalars: pd.DataFrame | None,
                    total_norm: pd.Series | None) -> Flag:
    """NaN or inf in scores, loss or gradient norm."""
    candidates = []
    if scores is not None and not scores.empty:
        for column in ("pos_nonfinite", "neg_nonfinite"):
            if column in scores:
                hit = scores[column].fillna(0) > 0
                if hit.any():
                    candidates.append((int(hit.idxmax()), column.replace("_", " ")))
    if scalars is not None and "loss" in getattr(scalars, "columns", []):
        loss = scalars["loss"].dropna()  # NaN there only means "not logged this step"
        hit = ~np.isfinite(loss)
        if hit.any():
            candidates.append((int(hit.idxmax()), "loss"))
    if total_norm is not None and len(total_norm):
        t = total_norm.dropna()
        hit = ~np.isfinite(t)
        if hit.any():
            candidates.append((int(hit.idxmax()), "gradient norm"))
    if not candidates:
        return Flag("non-finite", False)
    step, what = min(candidates)
    return Flag("non-finite", True, step, f"first in {what}")


def run_health(scores: pd.DataFrame | None, scalars: pd.DataFrame | None = None,
               total_norm: pd.Series | None = None) -> list[Flag]:
    """All three checks for one run, in a fixed order."""
    return [
        check_collapse(scores),
        check_instability(scores, total_norm),
        check_nonfinite(scores, scalars, total_norm),
    ]


# ---- the representation (log_embeddings) ------------------------------------------

# Complete collapse: std (the mean per-dimension std of the l2-normalised embeddings) below this
# many times 1/sqrt(dim), the std of spread-out embeddings, for COLLAPSE_RECORDS records in a row:
# the samples crowd around one point. Embeddings that still spread, however few their directions,
# stay far above it (k random directions give about 1, a single one 0.8). Measured on digits
# (docs/simsiam_collapse.md): healthy runs 0.81 to 1.0 after their first 20 steps, SimSiam without
# stop-gradient 0.20 to 0.39 and falling, MoCo v2 at random initialisation 0.25 to 0.35 over its
# first 7 steps, which the 20 records in a row leave unflagged. An embedding along one coordinate
# axis, 1/sqrt(dim) in these units, is the exception this flags too.
COMPLETE_COLLAPSE_STD = 0.3
COLLAPSE_RECORDS = 20
# Dimensional collapse: the effective rank (RankMe) below this fraction of dim, for RANK_PERSIST
# windows in a row; windows with fewer samples than dim are not judged (their rank cannot reach
# dim). Measured on digits: MoCo v2 projections 0.24 to 0.29 of dim, SimSiam with stop-gradient
# 0.48 to 0.53 at the end, SimSiam without stop-gradient (its own head) 0.14 to 0.15 at the end,
# isotropic Gaussian embeddings above 0.95.
DIMENSIONAL_COLLAPSE_RANK = 0.2
RANK_PERSIST = 3
REPRESENTATION_CHECKS = ("complete collapse", "dimensional collapse")

REPRESENTATION_THRESHOLDS_TEXT = (
    f"complete collapse: embedding std below {COMPLETE_COLLAPSE_STD:g}/sqrt(dim) (spread-out embeddings have "
    f"about 1/sqrt(dim)) for {COLLAPSE_RECORDS} consecutive records; dimensional collapse (a notice: it fires on "
    f"runs as accurate as their best siblings too): effective rank (RankMe) below {DIMENSIONAL_COLLAPSE_RANK:g} x dim "
    f"for {RANK_PERSIST} consecutive windows with at least dim samples."
)


def check_complete_collapse(embeddings: pd.DataFrame | None) -> Flag:
    """Every sample at one point: std far below that of spread-out embeddings."""
    if embeddings is None or embeddings.empty or "std" not in embeddings:
        return Flag("complete collapse", False, detail="no embeddings")
    scaled = embeddings["std"] * np.sqrt(embeddings["dim"].astype(float))
    found = stretches(scaled < COMPLETE_COLLAPSE_STD, COLLAPSE_RECORDS)
    # the warm-up rule of the score check: crowded at the start of training, then left
    warmup = next(((int(a), int(b)) for a, b in found if b is not None and a < embeddings.index[0] + WARMUP_STEPS),
                  None)
    found = [(a, b) for a, b in found if (int(a), None if b is None else int(b)) != warmup]
    if not found:
        return Flag("complete collapse", False, warmup=warmup)
    step, end = found[0]
    return Flag("complete collapse", True, int(step),
                f"std {embeddings['std'][step]:.2g} = {scaled[step]:.2g}/sqrt(dim)",
                end=None if end is None else int(end), last=int(embeddings.index[-1]))


def check_dimensional_collapse(embeddings: pd.DataFrame | None) -> Flag:
    """The embeddings span few of their dimensions: effective rank below a fraction of dim."""
    if embeddings is None or embeddings.empty or "rank" not in embeddings:
        return Flag("dimensional collapse", False, detail="no embeddings")
    windows = embeddings[["rank", "dim", "window_samples"]].dropna(subset=["rank"])
    windows = windows[windows["window_samples"] >= windows["dim"]]
    if windows.empty:
        return Flag("dimensional collapse", False, detail="no spectrum with at least dim samples")
    found = stretches(windows["rank"] < DIMENSIONAL_COLLAPSE_RANK * windows["dim"], RANK_PERSIST)
    if not found:
        return Flag("dimensional collapse", False)
    step, end = found[0]
    rank, dim = windows["rank"][step], int(windows["dim"][step])
    return Flag("dimensional collapse", True, int(step), f"rank {rank:.1f} of dim {dim}",
                end=None if end is None else int(end), last=int(windows.index[-1]))


def representation_health(embeddings: pd.DataFrame | None) -> list[Flag]:
    """Both representation checks for one run's Run.embeddings(tag) frame, in REPRESENTATION_CHECKS order."""
    return [check_complete_collapse(embeddings), check_dimensional_collapse(embeddings)]
