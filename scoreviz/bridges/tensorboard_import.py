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
import hashlib
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from scoreviz import arguments
from scoreviz.bridges import require
from scoreviz.bridges.event_records import Damage, read_records
from scoreviz.bridges.options import DEFAULT_BINS, add_import_arguments as add_arguments  # noqa: F401
from scoreviz.bridges.precomputed import KindSummary, score_stats, write_precomputed_run
from scoreviz.bridges.tensorboard import MARKER_TAG, TOTAL_LAYER, read_marker_text
from scoreviz.errors import ScorevizError
from scoreviz.store.schema import KINDS, MAX_BINS
from scoreviz.store import FILE_NAME

UNPAIRED_KIND = "neg"
_PURPOSE = "scoreviz import-tensorboard"


@dataclass
class ImportReport:
    """What one TensorBoard run became."""

    source: Path
    run_dir: Path | None  # None: nothing imported (see `error`, or nothing could be read)
    tags: dict = field(default_factory=dict)          # scoreviz tag -> {kind: TensorBoard tag}
    steps: int = 0
    scalars: int = 0
    layers: int = 0
    files: int = 0                                    # event files read
    outside: dict = field(default_factory=dict)       # TensorBoard tag -> fraction of values outside [-1, 1]
    skipped: list = field(default_factory=list)       # TensorBoard tags of other kinds (images, text, ...)
    lost: list = field(default_factory=list)          # what --partial left out: damaged files, refused events
    already: bool = False                             # imported by an earlier run of the same import: kept
    error: str | None = None                          # why this run was not imported

    def lines(self) -> list[str]:
        if self.error is not None:
            return [self.error]
        if self.already:
            return [f"{self.source} -> {self.run_dir}: imported before from these event files, kept"]
        if self.run_dir is None:
            return [f"{self.source}: nothing imported, no histograms or scalars could be read"
                    + (f" (it holds: {', '.join(self.skipped)})" if self.skipped else "")] + self._lost_lines()
        out = [f"{self.source} -> {self.run_dir}: {len(self.tags)} score tag(s) over {self.steps} step(s), "
               f"{self.scalars} scalar(s), {self.layers} gradient layer(s)"]
        for tag, kinds in self.tags.items():
            out.append(f"  tag {tag!r}: " + ", ".join(f"{k} from {v!r}" for k, v in kinds.items()))
        for tb_tag, fraction in self.outside.items():
            out.append(f"  {tb_tag!r}: {fraction:.1%} of the values lie outside [-1, 1]; they count in the "
                       "statistics and as out-of-range, not in the histogram")
        if self.skipped:
            out.append(f"  not imported (no scoreviz equivalent): {', '.join(self.skipped)}")
        return out + self._lost_lines()

    def _lost_lines(self):
        return [f"  left out (--partial): {what}" for what in self.lost]


def find_event_files(logdir: Path) -> dict:
    """{folder: its event files, sorted by name (their time order)} for every folder at or
    below `logdir` that holds event files (`*tfevents*`), folders sorted."""
    found = defaultdict(list)
    for path in logdir.rglob("*tfevents*"):
        if path.is_file():
            found[path.parent].append(path)
    return {folder: sorted(found[folder]) for folder in sorted(found)}


def find_event_dirs(logdir: Path) -> list[Path]:
    """Folders at or below `logdir` that hold event files, sorted."""
    return list(find_event_files(logdir))


def import_tensorboard(logdir, out_dir, bins: int | None = None, partial: bool = False,
                       progress: bool = True, log=None) -> list[ImportReport]:
    """Import every TensorBoard run below `logdir` into `out_dir`; returns one report per run.

    `bins`: histogram bins over [-1, 1]; by default those of a scoreviz export, else 100.
    Each run is written whole or not at all. A run that cannot be imported (a damaged
    event file, a tag or step the Recorder refuses, a run of another origin already at its
    place) is reported by name and the others are still imported; then a ScorevizError
    says which failed. Running the same import again keeps the runs it wrote before
    (same event files) and imports the rest. `partial`: import what can be read of damaged
    files and leave refused events out, each named in the report. `log(report)` is
    called as each run is done; `progress` shows a bar over the event files.
    """
    logdir, out_dir = Path(logdir), Path(out_dir)
    if not logdir.is_dir():
        raise ScorevizError(f"{logdir}: no such folder")
    if bins is not None and (isinstance(bins, bool) or not isinstance(bins, int) or not 1 <= bins <= MAX_BINS):
        raise ScorevizError(f"--bins must be an integer from 1 to {MAX_BINS}, got {bins!r}")
    event_files = find_event_files(logdir)
    if not event_files:
        raise ScorevizError(f"{logdir}: no TensorBoard event files (*tfevents*) in it or below it")
    parse = _EventParser()
    reports = []
    with tqdm(total=sum(len(f) for f in event_files.values()), desc="import-tensorboard", unit="file",
              disable=not progress, file=sys.stderr) as bar:
        for source, files in event_files.items():
            target = out_dir / (source.relative_to(logdir).as_posix() if source != logdir else logdir.resolve().name)
            try:
                report = _import_run(parse, source, files, target, bins, partial, bar)
            except ScorevizError as err:
                report = ImportReport(source, None, error=str(err))
            reports.append(report)
            if log is not None and (report.error is None or len(event_files) > 1):  # one run's error: raised
                log(report)
    failed = [r for r in reports if r.error is not None]
    if len(reports) == 1 and failed:
        raise ScorevizError(failed[0].error)
    if failed:
        raise ScorevizError(f"{len(failed)} of {len(reports)} TensorBoard runs not imported (each said above), the "
                            f"first: {failed[0].error}" + ("; the others were written, and the same command run "
                                                           "again keeps them" if len(failed) < len(reports) else ""))
    if all(r.run_dir is None for r in reports):
        raise ScorevizError(f"{logdir}: no histograms or scalars could be read from its event files "
                            "(they are empty or hold only other kinds of data)")
    return reports


# ------------------------------------------------------------------ reading


@dataclass
class _Events:
    """One TensorBoard run's events, histograms already re-binned (a later event of a step wins)."""

    bins: int | None
    histograms: dict = field(default_factory=lambda: defaultdict(dict))  # TB tag -> {step: KindSummary}
    scalars: dict = field(default_factory=lambda: defaultdict(dict))     # TB tag -> {step: value}
    plugins: dict = field(default_factory=dict)                          # TB tag -> plugin name (TF2 tensors)
    marker: dict | None = None
    skipped: set = field(default_factory=set)
    refused: list = field(default_factory=list)                          # (what, why) of events left out
    events: int = 0


class _EventParser:
    """Reads event files into `_Events`, each value checked as the Recorder checks a log call."""

    def __init__(self):
        self.event_pb2 = require("tensorboard.compat.proto.event_pb2", "tensorboard", _PURPOSE)
        self.tensor_util = require("tensorboard.util.tensor_util", "tensorboard", _PURPOSE)
        require("google_crc32c", "tensorboard", _PURPOSE)

    def read_file(self, path: Path, events: _Events, partial: bool):
        """Add the events of one file; ScorevizError for a damaged file unless `partial`
        (then its damage is added to `events.refused`)."""
        damage = Damage(path, 0)
        read, steps = 0, None
        for data in read_records(path, damage, _PURPOSE):
            try:
                event = self.event_pb2.Event.FromString(data)
            except Exception:  # noqa: BLE001: protobuf's DecodeError; the checksum held, so written so
                events.refused.append((f"{path}: record {read + 1}", "not a TensorBoard event"))
                continue
            read += 1
            if event.HasField("summary"):
                steps = (min(steps[0], event.step), max(steps[1], event.step)) if steps else (event.step,) * 2
            self._add(path, event, events, partial)
        events.events += read
        if damage:
            if not partial:
                raise ScorevizError(damage.describe(read, steps) + "; nothing of its run was imported "
                                                                   "(--partial imports what can be read)")
            events.refused.append((damage.describe(read, steps), ""))

    def _add(self, path, event, events: _Events, partial: bool):
        what = event.WhichOneof("what")
        if what == "graph_def" or what == "meta_graph_def":
            events.skipped.add("(graph)")
        if what != "summary":
            return
        for value in event.summary.value:
            try:
                self._add_value(path, event.step, value, events)
            except ScorevizError as err:
                if not partial:
                    raise ScorevizError(f"{err}; nothing of its run was imported (--partial leaves such "
                                        "events out)") from None
                events.refused.append((str(err), ""))

    def _add_value(self, path, step, value, events: _Events):
        tag = value.tag
        if value.metadata.plugin_data.plugin_name:
            events.plugins.setdefault(tag, value.metadata.plugin_data.plugin_name)
        kind = value.WhichOneof("value")
        where = f"{path}: tag {tag[:60]!r} at step {step}"
        if kind in ("simple_value", "histo") or (kind == "tensor" and events.plugins.get(tag) in
                                                 ("scalars", "histograms")):
            try:
                step = arguments.step(step)
            except ScorevizError as err:
                raise ScorevizError(f"{where}: {err} (as the Recorder's)") from None
        if kind == "simple_value":
            events.scalars[tag][step] = float(value.simple_value)
        elif kind == "histo":
            self._add_histogram(events, tag, step, _legacy_buckets(value.histo, where))
        elif kind == "tensor":
            plugin = events.plugins.get(tag)
            if plugin in ("scalars", "histograms", "text"):
                try:
                    array = self.tensor_util.make_ndarray(value.tensor)
                except Exception as err:  # noqa: BLE001: a malformed tensor, in whatever way protobuf or numpy says
                    raise ScorevizError(f"{where}: its tensor cannot be read ({type(err).__name__})") from None
            if plugin == "scalars":
                if array.size != 1 or array.dtype.kind not in "biuf":
                    raise ScorevizError(f"{where}: a scalar holding {array.size} values of type {array.dtype}")
                events.scalars[tag][step] = float(array.reshape(-1)[0])
            elif plugin == "histograms":
                self._add_histogram(events, tag, step, _v2_buckets(array, where))
            elif plugin == "text" and tag in (MARKER_TAG, MARKER_TAG + "/text_summary") and array.size:
                text = array.reshape(-1)[0]
                try:
                    marker = read_marker_text(text.decode("utf-8") if isinstance(text, bytes) else str(text))
                except ValueError:
                    events.skipped.add(tag)
                    return
                if events.histograms and events.bins is not None and marker.get("bins", events.bins) != events.bins:
                    raise ScorevizError(f"{where}: the scoreviz marker comes after histograms re-binned "
                                        f"onto {events.bins} bins and says {marker.get('bins')!r}")
                events.marker = marker if isinstance(marker, dict) else None
            else:
                events.skipped.add(tag)
        elif kind in ("image", "audio"):
            events.skipped.add(tag)

    def _add_histogram(self, events: _Events, tag, step, buckets):
        if events.bins is None:  # fixed at the first histogram: a scoreviz export's marker comes first
            events.bins = _positive_bins((events.marker or {}).get("bins", DEFAULT_BINS))
        events.histograms[tag][step] = _summary(buckets, np.linspace(-1.0, 1.0, events.bins + 1))


def _positive_bins(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BINS:
        raise ScorevizError(f"the scoreviz marker's bins {value!r} is not an integer from 1 to {MAX_BINS}")
    return value


def _legacy_buckets(h, where):
    """A HistogramProto (torch, TF1): buckets (lefts, rights, counts) and its exact moments.
    Its first bucket starts at min, its last ends at max; the others end at bucket_limit."""
    if len(h.bucket_limit) != len(h.bucket):
        raise ScorevizError(f"{where}: a histogram with {len(h.bucket_limit)} bucket limits and "
                            f"{len(h.bucket)} counts")
    limits = np.fromiter(h.bucket_limit, dtype=np.float64, count=len(h.bucket_limit))
    counts = np.fromiter(h.bucket, dtype=np.float64, count=len(h.bucket))
    moments = (float(h.num), float(h.sum), float(h.sum_squares), float(h.min), float(h.max))
    if not np.isfinite(moments[:3]).all() or moments[0] < 0 or moments[2] < 0:
        raise ScorevizError(f"{where}: a histogram whose count, sum or sum of squares is NaN, infinite or negative")
    if not len(limits):
        return limits, limits, counts, moments
    _check_buckets(limits[:-1], counts, where, moments[3:])
    lefts = np.concatenate(([h.min], limits[:-1]))
    rights = np.concatenate((limits[:-1], [h.max]))
    return lefts, rights, counts, moments


def _v2_buckets(array, where):
    """A TF2 histogram tensor (k, 3) of left edge, right edge, count; its moments are not kept."""
    if array.dtype.kind not in "biuf" or (array.size and (array.ndim != 2 or array.shape[1] != 3)):
        raise ScorevizError(f"{where}: a histogram tensor of shape {array.shape} and type {array.dtype}; "
                            "expected (buckets, 3) numbers")
    array = np.asarray(array, dtype=np.float64).reshape(-1, 3)
    _check_buckets(array[:, :2], array[:, 2], where)
    return array[:, 0], array[:, 1], array[:, 2], None


def _check_buckets(limits, counts, where, extremes=()):
    """Bucket limits (and a histogram's min and max) finite, counts finite and not negative."""
    if not (np.isfinite(limits).all() and np.isfinite(extremes).all()):
        raise ScorevizError(f"{where}: a histogram with a NaN or infinite bucket limit, min or max")
    if not np.isfinite(counts).all() or (counts < 0).any():
        raise ScorevizError(f"{where}: a histogram with a NaN, infinite or negative bucket count")


# ------------------------------------------------------------------ converting


_BUCKETS_PER_PASS = 1 << 14  # buckets handled at once: at most 64 x as many (bucket, edge) pairs, a few tens of MB
_WIDE_SPAN = 64              # a bucket cutting more edges than this is added as a linear function


def rebin(lefts, rights, counts, edges):
    """Spread bucket counts over `edges` (each bucket evenly over its width; a
    zero-width bucket is a point) and round to whole counts keeping the total.

    Returns the counts per bin (bins,), whole numbers; what lies outside the edges is left out.
    Bins are half-open [a, b) except the last, which holds its right edge, as torch.histc.
    The limits and counts must be finite (the caller checks, naming the event).

    One pass over the buckets, in slices: beyond the buckets themselves, the memory used
    is bounded by the bins and the slice sizes, not by the number of buckets (10**7
    buckets took 7.5 GiB when every bucket met every edge in one matrix).
    """
    lefts, rights, counts = (np.asarray(a, dtype=np.float64) for a in (lefts, rights, counts))
    edges = np.asarray(edges, dtype=np.float64)
    # the mass left of each edge: whole buckets ending at or before it (added where they
    # end, then summed up) and the shares of the buckets it cuts
    whole, cut = np.zeros(len(edges) + 1), np.zeros(len(edges))
    for start in range(0, len(counts), _BUCKETS_PER_PASS):
        part = slice(start, start + _BUCKETS_PER_PASS)
        _add_mass(lefts[part], rights[part], counts[part], edges, whole, cut)
    return _round_keeping_total(np.diff(np.cumsum(whole)[:len(edges)] + cut))


def _add_mass(lefts, rights, counts, edges, whole, cut):
    """Add some buckets' mass left of each edge to `whole` (by the edge where a bucket is
    whole) and `cut` (the share of a bucket an edge cuts)."""
    keep = counts > 0
    lefts, rights, counts = lefts[keep], rights[keep], counts[keep]
    rights = np.maximum(rights, lefts)
    n_edges = len(edges)
    point = rights == lefts
    if point.any():  # a point at x lies left of every edge above it, and of the last edge if on it
        at = np.searchsorted(edges, lefts[point], side="right")
        at[lefts[point] == edges[-1]] = n_edges - 1
        whole += np.bincount(at, weights=counts[point], minlength=n_edges + 1)
        lefts, rights, counts = lefts[~point], rights[~point], counts[~point]
    first = np.searchsorted(edges, lefts, side="right")  # the first edge right of the bucket's left end
    end = np.searchsorted(edges, rights, side="left")    # the first edge at or right of its right end
    whole += np.bincount(end, weights=counts, minlength=n_edges + 1)
    spans = end - first  # how many edges each bucket cuts
    # A bucket cutting many edges adds a linear function of the edge over them: added as
    # differences (two entries per bucket, however wide). Such a bucket spans many bins,
    # so its slope (count / width) is small and the differences cancel without loss.
    wide = spans > _WIDE_SPAN
    if wide.any():
        slope = counts[wide] / (rights[wide] - lefts[wide])
        constant, linear = np.zeros(n_edges + 1), np.zeros(n_edges + 1)
        np.add.at(constant, first[wide], -slope * lefts[wide])
        np.add.at(constant, end[wide], slope * lefts[wide])
        np.add.at(linear, first[wide], slope)
        np.add.at(linear, end[wide], -slope)
        cut += np.cumsum(constant)[:n_edges] + np.cumsum(linear)[:n_edges] * edges
        spans = np.where(wide, 0, spans)
    # the others, edge by edge: at most _WIDE_SPAN (bucket, edge) pairs per bucket
    bucket = np.repeat(np.arange(len(spans)), spans)
    edge = first[bucket] + np.arange(len(bucket)) - np.repeat(np.cumsum(spans) - spans, spans)
    share = (edges[edge] - lefts[bucket]) / (rights[bucket] - lefts[bucket])
    cut += np.bincount(edge, weights=counts[bucket] * share, minlength=n_edges)


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


def _import_run(parse: _EventParser, source: Path, files: list, target: Path, bins, partial: bool,
                bar) -> ImportReport:
    """Read one TensorBoard run's event files and write it as a scoreviz run, whole or not at all."""
    done = bar.n
    try:
        digest = _files_digest(files)
        if _imported_before(source, target, digest):
            return ImportReport(source, target, already=True, files=len(files))
        events = _Events(bins)
        for path in files:
            parse.read_file(path, events, partial)
            bar.update(1)
    finally:
        bar.update(done + len(files) - bar.n)  # a run that failed half-way counts as done too
    marker = events.marker or {}
    bins = events.bins or _positive_bins(marker.get("bins", DEFAULT_BINS))
    report = ImportReport(source, target, skipped=sorted(events.skipped), files=len(files))
    names = _Names(events, partial)
    rows = _score_rows(events, report, names)
    plain, layers, extras = _sort_scalars(events, rows, names)
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
    report.lost = [f"{what}: {why}" if why else what for what, why in events.refused]
    if not scores and gradients is None and scalars is None:
        report.run_dir = None  # nothing to write
        return report
    from scoreviz import __version__

    env = dict(marker.get("env", {}))
    env.update(imported_from=str(source.resolve()), imported_files=digest,
               imported_by=f"scoreviz {__version__} import-tensorboard" + (" --partial" if report.lost else ""))
    write_precomputed_run(target, bins=bins, config=marker.get("config", {}), env=env,
                          scores=scores, gradients=gradients, scalars=scalars)
    report.steps = len(steps)
    return report


def _files_digest(files) -> str:
    """What identifies the event files a run was imported from: their names and sizes."""
    digest = hashlib.sha256()
    for path in files:
        try:
            size = path.stat().st_size
        except OSError as err:
            raise ScorevizError(f"{path}: cannot read the event file ({err.strerror or err})") from None
        digest.update(f"{path.name}\0{size}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _imported_before(source: Path, target: Path, digest: str) -> bool:
    """Whether `target` holds this very import (same event files): a re-run keeps it.
    ScorevizError if another run is there."""
    path = target / FILE_NAME
    if not (path.exists() or path.is_symlink()):
        return False
    from scoreviz.run import open_run

    try:
        env = open_run(target).env
    except ScorevizError:
        env = {}
    if env.get("imported_from") == str(source.resolve()):
        if env.get("imported_files") == digest:
            return True
        raise ScorevizError(f"{path}: imported before from {source}, whose event files have changed since; "
                            f"remove {target} to import it again")
    raise ScorevizError(f"{path}: a run is already there; remove it or choose another --out")


class _Names:
    """Tag, scalar and layer names checked with the Recorder's rules (scoreviz.arguments.name)."""

    def __init__(self, events: _Events, partial: bool):
        self.events, self.partial = events, partial

    def keep(self, name: str, what: str, tb_tag: str) -> bool:
        """Whether `name` (from TensorBoard tag `tb_tag`) is kept; a refused one is a
        ScorevizError, or, with --partial, left out and reported."""
        try:
            arguments.name(name, what)
            return True
        except ScorevizError as err:
            if not self.partial:
                raise ScorevizError(f"TensorBoard tag {tb_tag[:60]!r}: {err}, as the Recorder refuses it; nothing "
                                    "of its run was imported (--partial leaves such tags out)") from None
            self.events.refused.append((f"TensorBoard tag {tb_tag[:60]!r}", str(err)))
            return False


def _score_rows(events: _Events, report: ImportReport, names: _Names) -> dict:
    """Histograms as {scoreviz tag: {step: {kind: KindSummary}}}; a later event of a step wins."""
    rows = defaultdict(dict)
    for tb_tag, by_step in events.histograms.items():
        tag, kind = _score_tag_of(tb_tag, events.marker)
        if not names.keep(tag, "score tag", tb_tag):
            continue
        report.tags.setdefault(tag, {})[kind] = tb_tag
        total = outside = 0.0
        for step, summary in by_step.items():
            rows[tag].setdefault(step, {})[kind] = summary
            total += summary.count
            outside += summary.out_of_range
        if outside > 0 and total > 0:
            report.outside[tb_tag] = outside / total
    return rows


def _sort_scalars(events: _Events, rows: dict, names: _Names):
    """(plain scalars, gradient layers, {tag: statistics a histogram cannot hold}), each {name: {step: value}}.

    Only a scoreviz export has gradients and statistics; in any other log every scalar is a scalar.
    """
    plain, layers, extras = {}, {}, defaultdict(dict)
    for tb_tag, values in events.scalars.items():
        head, _, name = tb_tag.partition("/")
        tag, _, column = name.rpartition("/")
        if events.marker is None:
            where, name = plain, tb_tag
        elif head == "scalars":
            where = plain
        elif head == "gradients":
            where = layers
        elif head == "scores" and tag in rows:
            extras[tag][column] = values  # the moments come from the histograms, in double precision
            continue
        else:
            where, name = plain, tb_tag
        if names.keep(name, "layer name" if where is layers else "scalar name", tb_tag):
            where[name] = values
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
    def log(report):  # above the progress bar
        if report.error is not None:
            tqdm.write(f"scoreviz: error: {report.error}", file=sys.stderr)
        else:
            tqdm.write("\n".join(report.lines()), file=sys.stdout)

    import_tensorboard(args.logdir, args.out, bins=args.bins, partial=args.partial, log=log)
    return 0
