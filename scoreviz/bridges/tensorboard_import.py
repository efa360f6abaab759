"""`scoreviz import-tensorboard LOGDIR --out runs/`: TensorBoard event files become scoreviz runs.

Every folder below LOGDIR holding event files (`*tfevents*`) is one TensorBoard
run and becomes one scoreviz run, `OUT/<its path below LOGDIR>`. Events are read
with TensorBoard's own EventAccumulator, keeping every event (no sampling, no
purge of orphaned steps after a restart: a step written twice keeps its later
event, as in any scoreviz run).

What becomes what:
- a histogram tag ending in `/pos` or `/neg` is the positive or negative kind of
  the scoreviz tag before it (`loss/sim/pos` + `loss/sim/neg` -> tag `loss/sim`);
  any other histogram tag becomes a scoreviz tag of its own, as negatives (the
  kind the app's distribution views open on);
- every scalar becomes a scalar under its TensorBoard name;
- event files written by `scoreviz export --format tensorboard` come back as
  they were: tags, statistics, gradient norms, scalars, config.

Histograms: TensorBoard's buckets have their own edges (exponentially spaced for
torch's and TF1's `add_histogram`, 30 equal buckets from min to max for TF2). They
are re-binned onto the run's equal [-1, 1] bins, each bucket's count spread
evenly over its width, and rounded to whole counts keeping the total (largest
remainder). Count, mean, variance, min and max come from the histogram's own
exact num, sum, sum of squares, min and max (TF2 histograms keep none of these:
there they are estimated from the buckets). Mass outside [-1, 1] is counted as
out-of-range, as the Recorder does. Quantiles are located in the re-binned
histogram. Non-finite counts and the per-sample negative variance are unknown
(NaN), except in scoreviz's own exports, which carry them.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from scoreviz.bridges import require
from scoreviz.bridges.options import DEFAULT_BINS, add_import_arguments as add_arguments  # noqa: F401
from scoreviz.bridges.precomputed import KindSummary, score_stats, write_precomputed_run
from scoreviz.bridges.tensorboard import MARKER_TAG, TOTAL_LAYER, read_marker_text
from scoreviz.errors import ScorevizError
from scoreviz.store.schema import KINDS
from scoreviz.store import FILE_NAME

UNPAIRED_KIND = "neg"
_PURPOSE = "scoreviz import-tensorboard"


@dataclass
class ImportReport:
    """What one TensorBoard run became."""

    source: Path
    run_dir: Path | None  # None: nothing could be imported
    tags: dict = field(default_factory=dict)          # scoreviz tag -> {kind: TensorBoard tag}
    steps: int = 0
    scalars: int = 0
    layers: int = 0
    outside: dict = field(default_factory=dict)       # TensorBoard tag -> fraction of values outside [-1, 1]
    skipped: list = field(default_factory=list)       # TensorBoard tags of other kinds (images, text, ...)

    def lines(self) -> list[str]:
        if self.run_dir is None:
            return [f"{self.source}: nothing imported, no histograms or scalars could be read"
                    + (f" (it holds: {', '.join(self.skipped)})" if self.skipped else "")]
        out = [f"{self.source} -> {self.run_dir}: {len(self.tags)} score tag(s) over {self.steps} step(s), "
               f"{self.scalars} scalar(s), {self.layers} gradient layer(s)"]
        for tag, kinds in self.tags.items():
            out.append(f"  tag {tag!r}: " + ", ".join(f"{k} from {v!r}" for k, v in kinds.items()))
        for tb_tag, fraction in self.outside.items():
            out.append(f"  {tb_tag!r}: {fraction:.1%} of the values lie outside [-1, 1]; they count in the "
                       "statistics and as out-of-range, not in the histogram")
        if self.skipped:
            out.append(f"  not imported (no scoreviz equivalent): {', '.join(self.skipped)}")
        return out


def find_event_dirs(logdir: Path) -> list[Path]:
    """Folders at or below `logdir` that hold event files, sorted."""
    return sorted({p.parent for p in logdir.rglob("*tfevents*") if p.is_file()})


def import_tensorboard(logdir, out_dir, bins: int | None = None) -> list[ImportReport]:
    """Import every TensorBoard run below `logdir` into `out_dir`; returns one report per run.

    `bins`: histogram bins over [-1, 1]; by default those of a scoreviz export, else 100.
    """
    logdir, out_dir = Path(logdir), Path(out_dir)
    if not logdir.is_dir():
        raise ScorevizError(f"{logdir}: no such folder")
    if bins is not None and (isinstance(bins, bool) or not isinstance(bins, int) or bins < 1):
        raise ScorevizError(f"--bins must be a positive integer, got {bins!r}")
    event_dirs = find_event_dirs(logdir)
    if not event_dirs:
        raise ScorevizError(f"{logdir}: no TensorBoard event files (*tfevents*) in it or below it")
    targets = [out_dir / (d.relative_to(logdir).as_posix() if d != logdir else logdir.resolve().name)
               for d in event_dirs]
    taken = [t / FILE_NAME for t in targets if (t / FILE_NAME).exists()]
    if taken:
        raise ScorevizError(f"{taken[0]}: a run is already there; remove it or choose another --out")
    accumulator = require("tensorboard.backend.event_processing.event_accumulator", "tensorboard", _PURPOSE)
    reports = []
    for source, target in tqdm(list(zip(event_dirs, targets)), desc="import-tensorboard", unit="run",
                               disable=len(event_dirs) < 2):
        events = _read_events(accumulator, source)
        reports.append(_import_run(events, source, target, bins))
    if all(r.run_dir is None for r in reports):
        raise ScorevizError(f"{logdir}: no histograms or scalars could be read from its event files "
                            "(they are empty, damaged, or hold only other kinds of data)")
    return reports


# ------------------------------------------------------------------ reading


@dataclass
class _Events:
    histograms: dict   # TensorBoard tag -> [(step, (lefts, rights, counts, exact moments or None))]
    scalars: dict      # TensorBoard tag -> [(step, value)]
    marker: dict | None
    skipped: list


def _read_events(accumulator, source: Path) -> _Events:
    guidance = {kind: 0 for kind in (accumulator.HISTOGRAMS, accumulator.SCALARS, accumulator.TENSORS,
                                     accumulator.COMPRESSED_HISTOGRAMS, accumulator.IMAGES, accumulator.AUDIO)}
    acc = accumulator.EventAccumulator(str(source), size_guidance=guidance, purge_orphaned_data=False)
    try:
        acc.Reload()
    except Exception as err:  # tensorboard raises its own errors for files that are not event files
        raise ScorevizError(f"{source}: cannot read its TensorBoard event files ({type(err).__name__}: {err})") from None
    tags = acc.Tags()
    histograms, scalars, marker, skipped = {}, {}, None, []
    for tag in tags.get("histograms", []):
        histograms[tag] = [(e.step, _legacy_buckets(e.histogram_value)) for e in acc.Histograms(tag)]
    for tag in tags.get("scalars", []):
        scalars[tag] = [(e.step, float(e.value)) for e in acc.Scalars(tag)]
    tensor_util = require("tensorboard.util.tensor_util", "tensorboard", _PURPOSE)
    for tag in tags.get("tensors", []):
        plugin = acc.SummaryMetadata(tag).plugin_data.plugin_name
        events = acc.Tensors(tag)
        if plugin == "histograms":
            histograms[tag] = [(e.step, _v2_buckets(tensor_util.make_ndarray(e.tensor_proto))) for e in events]
        elif plugin == "scalars":
            scalars[tag] = [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in events]
        elif plugin == "text" and tag in (MARKER_TAG, MARKER_TAG + "/text_summary") and events:
            text = tensor_util.make_ndarray(events[-1].tensor_proto).reshape(-1)[0]
            try:
                marker = read_marker_text(text.decode("utf-8") if isinstance(text, bytes) else str(text))
            except ValueError:
                skipped.append(tag)
        else:
            skipped.append(tag)
    for kind in ("images", "audio"):
        skipped += tags.get(kind, [])
    if tags.get("graph"):
        skipped.append("(graph)")
    return _Events(histograms, scalars, marker, skipped)


def _legacy_buckets(h):
    """A HistogramProto (torch, TF1): buckets (lefts, rights, counts) and its exact moments.
    Its first bucket starts at min, its last ends at max; the others end at bucket_limit."""
    limits = list(h.bucket_limit)
    lefts = np.array([h.min] + limits[:-1], dtype=np.float64)
    rights = np.array(limits[:-1] + [h.max], dtype=np.float64)
    moments = (float(h.num), float(h.sum), float(h.sum_squares), float(h.min), float(h.max))
    return lefts, rights, np.array(h.bucket, dtype=np.float64), moments


def _v2_buckets(array):
    """A TF2 histogram tensor (k, 3) of left edge, right edge, count; its moments are not kept."""
    array = np.asarray(array, dtype=np.float64).reshape(-1, 3)
    return array[:, 0], array[:, 1], array[:, 2], None


# ------------------------------------------------------------------ converting


def rebin(lefts, rights, counts, edges):
    """Spread bucket counts over `edges` (each bucket evenly over its width; a
    zero-width bucket is a point) and round to whole counts keeping the total.

    Returns the counts per bin (bins,), whole numbers; what lies outside the edges is left out.
    Bins are half-open [a, b) except the last, which holds its right edge, as torch.histc.
    """
    keep = counts > 0
    lefts, rights, counts = lefts[keep], rights[keep], counts[keep]
    rights = np.maximum(rights, lefts)
    edges = np.asarray(edges, dtype=np.float64)
    width = rights - lefts
    wide = width > 0
    # cumulative mass at each edge: the share of each bucket lying left of the edge
    share = np.zeros((len(counts), len(edges)))
    with np.errstate(invalid="ignore", divide="ignore"):
        share[wide] = np.clip((edges[None, :] - lefts[wide, None]) / width[wide, None], 0.0, 1.0)
    point = ~wide
    share[point] = edges[None, :] > lefts[point, None]
    share[point, -1] = edges[-1] >= lefts[point]
    return _round_keeping_total(np.diff(counts @ share))


def _round_keeping_total(mass):
    """Whole numbers with the rounded total of `mass`, each within one of its value (largest remainder)."""
    mass = np.maximum(mass, 0.0)
    floor = np.floor(mass)
    missing = int(round(mass.sum() - floor.sum()))
    if missing > 0:
        floor[np.argsort(floor - mass, kind="stable")[:missing]] += 1
    return floor


def _summary(buckets, edges) -> KindSummary:
    lefts, rights, counts, moments = buckets
    hist = rebin(lefts, rights, counts, edges)
    if moments is None:  # TF2: estimate the moments from the buckets, each bucket uniform
        used = counts > 0
        mid, width = (lefts + rights) / 2, rights - lefts
        count = float(counts.sum())
        moments = (count, float(counts @ mid), float(counts @ (mid * mid + width * width / 12)),
                   float(lefts[used].min()) if used.any() else np.nan,
                   float(rights[used].max()) if used.any() else np.nan)
    count, total, sum_squares, minimum, maximum = moments
    out_of_range = max(count - float(hist.sum()), 0.0)
    return KindSummary(count, total, sum_squares, minimum, maximum, hist, out_of_range=out_of_range)


def _score_tag_of(tb_tag: str, marker) -> tuple[str, str]:
    """(scoreviz tag, kind) of a TensorBoard histogram tag."""
    head, _, last = tb_tag.rpartition("/")
    if head and last in KINDS:
        if marker is not None and head.startswith("scores/"):
            head = head[len("scores/"):]
        return head, last
    return tb_tag, UNPAIRED_KIND


def _import_run(events: _Events, source: Path, target: Path, bins) -> ImportReport:
    marker = events.marker or {}
    bins = bins or int(marker.get("bins", DEFAULT_BINS))
    report = ImportReport(source, target, skipped=sorted(events.skipped))
    rows = _score_rows(events, np.linspace(-1.0, 1.0, bins + 1), report)
    plain, layers, extras = _sort_scalars(events, rows)
    scores = {tag: _score_stats(by_step, extras[tag], bins) for tag, by_step in rows.items()}
    steps = {s for by_step in rows.values() for s in by_step}
    gradients = scalars = None
    if layers:
        gradients = _gradient_rows(layers, marker.get("layers", []))
        report.layers = len(gradients[1])
        steps.update(gradients[0])
    if plain:
        scalar_steps, table = _table(plain)
        scalars = (scalar_steps, list(plain), table)
        report.scalars = len(plain)
        steps.update(scalars[0])
    if not scores and gradients is None and scalars is None:
        report.run_dir = None  # nothing to write
        return report
    from scoreviz import __version__

    env = dict(marker.get("env", {}))
    env.update(imported_from=str(source.resolve()), imported_by=f"scoreviz {__version__} import-tensorboard")
    write_precomputed_run(target, bins=bins, config=marker.get("config", {}), env=env,
                          scores=scores, gradients=gradients, scalars=scalars)
    report.steps = len(steps)
    return report


def _score_rows(events: _Events, edges, report: ImportReport) -> dict:
    """Histograms as {scoreviz tag: {step: {kind: KindSummary}}}; a later event of a step wins."""
    rows = defaultdict(dict)
    for tb_tag, series in events.histograms.items():
        tag, kind = _score_tag_of(tb_tag, events.marker)
        report.tags.setdefault(tag, {})[kind] = tb_tag
        total = outside = 0.0
        for step, buckets in series:
            summary = _summary(buckets, edges)
            rows[tag].setdefault(step, {})[kind] = summary
            total += summary.count
            outside += summary.out_of_range
        if outside > 0 and total > 0:
            report.outside[tb_tag] = outside / total
    return rows


def _sort_scalars(events: _Events, rows: dict):
    """(plain scalars, gradient layers, {tag: statistics a histogram cannot hold}), each {name: {step: value}}.

    Only a scoreviz export has gradients and statistics; in any other log every scalar is a scalar.
    """
    plain, layers, extras = {}, {}, defaultdict(dict)
    for tb_tag, series in events.scalars.items():
        values = dict(series)  # a later event of a step wins
        head, _, name = tb_tag.partition("/")
        tag, _, column = name.rpartition("/")
        if events.marker is None:
            plain[tb_tag] = values
        elif head == "scalars":
            plain[name] = values
        elif head == "gradients":
            layers[name] = values
        elif head == "scores" and tag in rows:
            extras[tag][column] = values  # the moments come from the histograms, in double precision
        else:
            plain[tb_tag] = values
    return plain, layers, extras


def _score_stats(by_step: dict, extras: dict, bins: int):
    """(steps, stored statistics) of one tag, with what a scoreviz export kept beside its histograms."""
    steps = sorted(by_step)
    summaries = [by_step[s] for s in steps]
    for kind in KINDS:
        for column in ("nonfinite", "out_of_range"):
            recorded = extras.get(f"{kind}_{column}", {})
            for step, summary in zip(steps, summaries):
                if summary.get(kind) is not None and step in recorded:
                    setattr(summary[kind], column, recorded[step])
    sample_var, margin, hard_frac = (extras.get(c, {}) for c in ("neg_sample_var", "margin", "hard_frac"))
    return steps, score_stats(bins, summaries, [sample_var.get(s, np.nan) for s in steps],
                              [margin.get(s, np.nan) for s in steps], [hard_frac.get(s, np.nan) for s in steps])


def _gradient_rows(layers: dict, order: list):
    """(steps, layer names in model order, norms, totals) from gradients/<layer> scalars."""
    names = [n for n in order if n in layers] + sorted(n for n in layers if n not in order and n != TOTAL_LAYER)
    steps, table = _table({n: layers[n] for n in names + [TOTAL_LAYER] if n in layers})
    totals = table[:, -1] if TOTAL_LAYER in layers else np.full(len(steps), np.nan)
    return steps, names, table[:, :len(names)], totals


def _table(series: dict):
    """(steps, values (n, len(series))) over the union of steps; NaN where a series has no value."""
    steps = sorted(set().union(*(s.keys() for s in series.values())))
    index = {s: i for i, s in enumerate(steps)}
    table = np.full((len(steps), len(series)), np.nan)
    for j, values in enumerate(series.values()):
        for step, value in values.items():
            table[index[step], j] = value
    return steps, table


# ------------------------------------------------------------------ command line


def main(args: argparse.Namespace) -> int:
    for report in import_tensorboard(args.logdir, args.out, bins=args.bins):
        print("\n".join(report.lines()))
    return 0
