"""The Recorder: the hook a training loop calls, cheap enough to leave on.

On the training thread each log call only launches device work: statistics are
computed where the scores live and kept as small device tensors, with no host
synchronisation. A writer thread wakes every `flush_secs`, copies the pending
rows to the host in one transfer per stream (after the CUDA events recorded at
log time), turns sums into statistics and does all the h5py work. Under
torch.distributed every rank computes its rows, the rows are all-reduced (they
are sums, minima and maxima) and only rank 0 writes.
"""

from __future__ import annotations

import atexit
import datetime
import os
import platform
import socket
import sys
import threading
import time
import warnings
import weakref
from collections import defaultdict

import numpy as np
import torch

from scoreviz import arguments
from scoreviz.embeddings import (
    SpectrumWindow, batch_mean, embedding_sums, normalised, summarize_embeddings, uniformity_stride,
    window_statistics,
)
from scoreviz.errors import ScorevizError
from scoreviz.logits import split as split_logits
from scoreviz.stats import KINDS, RowLayout, masked_score_row, score_row, summarize
from scoreviz.store import FILE_NAME, StoreWriter
from scoreviz.store.schema import SPECTRUM_COLUMNS
from scoreviz.store.objects import check_options, is_url, local_path, shown
from scoreviz.store.publish import DEFAULT_UPLOAD_SECS, RemoteWriter

_LAUNCHER_RANKS = ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK")  # torchrun, SLURM, Open MPI, MPICH
_WAKE_AT_PENDING = 1024  # wake the writer early rather than hold more rows in memory
# Spectrum windows handed to the writer and not yet written hold at most this many bytes (beyond
# the one window always let through): a window that would pass it is dropped, and counted. Each
# holds a dim x dim float64 matrix (three with two views), 128 MiB at dim 4096, and the writer's
# eigen-decompositions can fall behind a training loop that ends windows faster (a small window,
# a large dim): without a bound they pile up in memory (0.4 -> 4.4 GB in 30 calls at dim 4096
# with spectrum_window=1) and close() waits for all of them.
MAX_PENDING_WINDOW_BYTES = 256 << 20
_open_recorders: "weakref.WeakSet[Recorder]" = weakref.WeakSet()


class Recorder:
    """Record score distributions, embedding statistics, gradient norms and scalars of a training run.

    Args:
        run_dir: the run's folder; created if needed. Holds `scores.h5`; if that
            file exists the Recorder appends to it (resuming a run).
        config: the run's settings (a dict or an argparse.Namespace), stored as
            JSON; values JSON cannot hold are stored as strings.
        every: record scores, logits and gradients only at steps divisible by
            `every`; scalars are always recorded.
        bins: histogram bins over [-1, 1] (at most 4096).
        flush_secs: the longest a logged step waits before it is on disk
            (0.01 to 86400 seconds). The default, 5, is the app's refresh
            interval: a write costs about the same however few steps it
            holds, so writing more often costs more per step, and the app
            shows new rows at its next refresh anyway.
        unbounded_tags: names of tags whose scores may leave [-1, 1] by design,
            e.g. scores after a feature transformation that does not
            re-normalise. Out-of-range scores of these tags are counted as
            always, without the warning meant for logits passed as scores.
        upload_secs: for a run at a URL, the seconds between two publishes of
            its new rows (1 to 3600; default 60: two requests a minute while
            rows arrive, see the README's "On a cluster or in the cloud").
        storage_options: for a run at a URL, fsspec's options for the store
            (credentials, endpoint_url...); by default the store's own chain
            (environment, profile, instance role). Never printed or stored.
        spectrum_window: recorded `log_embeddings` calls of a tag whose embeddings
            make one spectrum (and one effective rank), stored at the window's last
            step; 0 records no spectrum. RankMe needs more samples than dimensions:
            choose it so that window x batch (over all ranks) exceeds dim; the
            default, 50, gives 6,400 samples at batch 128.

    Use it as a context manager, or call `close()`; a run that ends without
    either (an exception, a normal interpreter exit) is still flushed.

    One writer per run: while a Recorder has the run open, a second one (in any
    process) gets a ScorevizError naming the first, and touches nothing. Under
    torch.distributed only rank 0 opens the file; the rank is torch.distributed's
    when it is initialised, else the launcher's (RANK from torchrun, SLURM_PROCID,
    OMPI_COMM_WORLD_RANK, PMI_RANK), so a Recorder built before
    init_process_group on every rank still has one writer.

    ``run_dir`` may be an fsspec URL (``s3://bucket/runs/a``, ``gs://...``): the run
    is written locally (in scoreviz's cache folder) as always, and a thread publishes
    its new rows every ``upload_secs`` as immutable parts plus a small manifest
    (scoreviz.store.publish). Bad credentials or a missing bucket are a
    ScorevizError here; a store that stops answering later never stops or slows
    the loop (a warning, then retries; the rows wait in the local file).

    If writing fails (a full disk, a quota, an I/O error), recording stops and the
    next log call, `flush()` or `close()` raises a ScorevizError naming the file
    and the errno; every row flushed before stays in the file, and a new Recorder
    on the same folder appends after them.
    """

    def __init__(self, run_dir, config=None, *, every: int = 1, bins: int = 100, flush_secs: float = 5.0,
                 unbounded_tags=(), spectrum_window: int = 50, upload_secs: float = DEFAULT_UPLOAD_SECS,
                 storage_options=None):
        self.every = arguments.positive_int(every, "every")
        self.unbounded_tags = arguments.tag_names(unbounded_tags, "unbounded_tags")
        self.bins = arguments.bins(bins)
        self._flush_secs = arguments.flush_secs(flush_secs)
        self.spectrum_window = arguments.window(spectrum_window)
        config = arguments.config(config)
        upload_secs = arguments.upload_secs(upload_secs)
        storage_options = check_options(storage_options, "Recorder")
        self.url = shown(run_dir) if is_url(run_dir) else None
        if self.url:
            self.run_dir = self.path = self.url
        else:
            self.run_dir = local_path(run_dir)
            self.path = self.run_dir / FILE_NAME
        self._layout = RowLayout(self.bins)
        self.rank = _rank()
        self._distributed = False  # set at the first log call that finds torch.distributed initialised
        self._pid = os.getpid()
        self._closed = False
        self._store = None
        self._module_params = None  # (model, its layers), built by log_gradients
        self._owner_cache = None
        self._warned = set()
        self._embedding_dims = {}  # tag -> dim: one dim per tag
        self._windows = {}  # tag -> the SpectrumWindow being filled
        self._dropped = defaultdict(int)  # tag -> windows dropped since its last one handed to the writer
        if self.rank != 0:
            return
        if self.url:
            self._store = RemoteWriter(run_dir, self.bins, config, _environment(), storage_options, upload_secs)
        else:
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise ScorevizError(f"{self.run_dir}: cannot create the run folder ({err})") from None
            self._store = StoreWriter(self.path, self.bins, config, _environment())
        self._embedding_dims = self._store.embedding_dims()  # a resumed run keeps each tag's dim
        self._pending = []
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._submitted = self._written = 0
        self._window_bytes = 0  # of the spectrum windows handed to the writer and not written yet
        self._wake = threading.Event()
        self._error = None
        self._stopping = False
        self._thread = threading.Thread(target=self._writer_loop, name="scoreviz-writer", daemon=True)
        self._thread.start()
        _open_recorders.add(self)

    # ------------------------------------------------------------ logging

    def log_scores(self, step, pos, neg=None, tag: str = "train"):
        """Record positive and negative cosine scores (in [-1, 1]) of one step.

        pos and neg may have any shape and live on any device; neg may be None
        (methods without negatives). The first dimension of `neg` is the sample:
        the mean over samples of each sample's own negative variance is kept too.
        Non-finite scores are counted and left out of every statistic.
        """
        step = self._check_open_and_step(step)
        pos = arguments.scores(pos, "pos", "log_scores")
        neg = pos.new_empty((0, 0)) if neg is None else arguments.scores(neg, "neg", "log_scores")
        self._record_scores(step, tag, "log_scores", lambda: score_row(pos, neg.to(pos.device), self.bins))

    def _record_scores(self, step, tag, caller, make_row):
        """The row `make_row()` makes, under `tag`, at a recorded step (reduced over ranks)."""
        tag = arguments.name(tag, f"{caller}: tag")
        if step % self.every:
            return
        with torch.inference_mode():  # no autograd bookkeeping: about a tenth of the cost of these small ops
            row = make_row()
            if self._in_process_group():
                self._reduce(row)
        if self.rank == 0:
            self._submit(("scores", tag, step, row, _event(row)))

    def log_logits(self, step, logits, temperature: float, tag: str = "train", positives=None, ignore=None):
        """Record logits (cosine scores divided by `temperature`; multiplied back here).

        ``positives`` says where each row's positive is (scoreviz.logits):

        - "first": MoCo's (batch, 1 + negatives), column 0 the positive, the rest its
          negatives; the default for logits that are not square;
        - "diagonal": in-batch (batch, batch) logits as in CLIP or InfoNCE over a batch,
          row i's positive in column i, the other columns its negatives (also (batch,
          batch + extra): extra candidates, e.g. hard negatives, appended as columns);
        - "ntxent": SimCLR's NT-Xent (2B, 2B) over both views stacked, row i's positive
          in column i + B (i - B in the second half), column i (its self-similarity) left
          out, the other 2B - 2 its negatives;
        - a bool mask of the logits' shape: True the positives (any number per row, e.g.
          SupCon's same-label entries), the rest the negatives, but those of ``ignore``:
          "diagonal" (SupCon's self-similarity), a bool mask, or False (none). Square
          logits with a mask need ``ignore`` said. The margin then pairs each row's weakest
          positive with its hardest negative.

        Square logits without ``positives=`` are refused with a ScorevizError: read as
        MoCo's they would record a silently wrong number.
        """
        step = self._check_open_and_step(step)
        logits = arguments.scores(logits, "logits", "log_logits")
        temperature = arguments.temperature(temperature)
        pos, neg, masks = split_logits(logits, positives, ignore)
        if masks is None:
            self._record_scores(step, tag, "log_logits", lambda: score_row(pos, neg, self.bins, temperature))
        else:
            self._record_scores(step, tag, "log_logits",
                                lambda: masked_score_row(logits, *masks, self.bins, temperature))

    def log_embeddings(self, step, z, z2=None, tag: str = "train"):
        """Record statistics of one step's embeddings z (batch, dim), any device.

        Per step: `std` (mean over dimensions of the per-dimension std of the
        l2-normalised embeddings), `uniformity` (log E exp(-2 ||x - y||^2) over the
        pairs of the batch; a batch of more than UNIFORMITY_SAMPLES (4,096) samples over
        the pairs of every k-th sample, at most 4,096) and, when a second view z2 of the
        same samples is given, `alignment` (E ||x - x2||^2). Over every
        `spectrum_window` recorded calls of a tag: the eigenvalues of the second moment
        of the centred normalised embeddings (the spectrum), their effective rank
        (RankMe) and the window's health signals (scoreviz.signals; LiDAR needs z2). A
        sample with a non-finite value is counted and left out. One dim per tag, also
        across a resumed run.

        Under torch.distributed call it on every rank, with the same shape on every
        rank: the statistics cover the global batch (uniformity over its pairs, or its sample's).
        """
        step = self._check_open_and_step(step)
        spectrum_on = self.spectrum_window > 0
        z = arguments.embeddings(z, "z", spectrum_on)
        if z2 is not None:
            z2 = arguments.embeddings(z2, "z2", spectrum_on, like=z)
        tag = arguments.name(tag, "log_embeddings: tag")
        dim = z.shape[1]
        if self._embedding_dims.setdefault(tag, dim) != dim:  # (rank 0 knows the dims of a resumed run)
            raise ScorevizError(f"log_embeddings: tag {tag!r} has dim {self._embedding_dims[tag]} in this run, got "
                                f"dim {dim}; log embeddings of another size under another tag")
        if step % self.every:
            return
        with torch.inference_mode():
            x, x2, valid = normalised(z, z2)
            distributed = self._in_process_group()
            world = torch.distributed.get_world_size() if distributed else 1
            stride = uniformity_stride(z.shape[0] * world)
            gathered, offset = self._gather(x, valid, stride) if distributed else (None, 0)
            row = embedding_sums(x, x2, valid, z.shape[0], gathered, offset, stride)
            if distributed:
                torch.distributed.all_reduce(row, op=torch.distributed.ReduceOp.SUM)
            if self.rank == 0:
                self._submit(("embeddings", tag, step, row, _event(row)))
            if spectrum_on:
                self._add_to_window(tag, step, x, x2, valid, row, distributed)

    def _gather(self, x, valid, stride):
        """Every rank's normalised embeddings x[::stride] (float32) and kept-sample mask, and where
        this rank's rows start among them: uniformity pairs this rank's samples with all of them."""
        world = torch.distributed.get_world_size()
        if x.device.type == "cpu":
            # Ranks that gather different shapes abort gloo (and would hang NCCL): on the CPU, where a
            # look at a value costs no device sync, the shapes are compared first; on a GPU equal
            # shapes are the caller's promise (DistributedSampler gives every rank the same batch).
            shape = torch.tensor(x.shape, dtype=torch.int64)
            shapes = [torch.empty_like(shape) for _ in range(world)]
            torch.distributed.all_gather(shapes, shape)
            if any(not torch.equal(other, shape) for other in shapes):
                raise ScorevizError("log_embeddings: under torch.distributed every rank must pass embeddings of the "
                                    f"same shape at a step; the ranks passed {[tuple(s.tolist()) for s in shapes]}")
        x = x[::stride]
        kept = torch.ones(x.shape[0], 1, device=x.device) if valid is None else valid[::stride].float()[:, None]
        local = torch.cat([x.float(), kept], dim=1).contiguous()
        parts = [torch.empty_like(local) for _ in range(world)]
        torch.distributed.all_gather(parts, local)
        everything = torch.cat(parts)
        return (everything[:, :-1], everything[:, -1] > 0.5), self.rank * x.shape[0]

    def _add_to_window(self, tag, step, x, x2, valid, row, distributed):
        window = self._windows.get(tag)
        if window is None:
            window = self._windows[tag] = SpectrumWindow(x.shape[1], x.device)
        device = window.buffer.device
        if x.device != device:  # the tag's embeddings moved: the window stays where it began
            x, row = x.to(device), row.to(device)
            x2 = None if x2 is None else x2.to(device)
            valid = None if valid is None else valid.to(device)
        window.add(x, valid, batch_mean(row) if window.reference is None else None, x2)
        window.last_step = step
        if window.calls >= self.spectrum_window:
            del self._windows[tag]
            if distributed:  # the sums add up over ranks (every rank passes a second view, or none)
                torch.distributed.all_reduce(window.buffer, op=torch.distributed.ReduceOp.SUM)
                if window.pairs is not None:
                    torch.distributed.all_reduce(window.pairs, op=torch.distributed.ReduceOp.SUM)
            self._submit_window(tag, window)

    def _submit_window(self, tag, window, closing=False):
        """Hand a finished window to the writer, or drop it (and count it) when the windows
        waiting for the writer hold MAX_PENDING_WINDOW_BYTES already; at close() never dropped."""
        if self.rank != 0:
            return
        with self._lock:
            busy = self._window_bytes > 0 and self._window_bytes + window.nbytes > MAX_PENDING_WINDOW_BYTES
            if not busy or closing:
                self._window_bytes += window.nbytes
        if busy and not closing:
            self._dropped[tag] += 1
            if "dropped windows" not in self._warned:
                self._warned.add("dropped windows")
                warnings.warn(
                    f"scoreviz: the writer is behind on spectrum windows: the window of tag {tag!r} ending at step "
                    f"{window.last_step} (dim {window.dim}, {window.nbytes / 2 ** 20:.0f} MiB) is dropped, and so "
                    "will be any other while the waiting windows hold more than "
                    f"{MAX_PENDING_WINDOW_BYTES >> 20} MiB; each stored window counts those dropped before it "
                    "(windows_dropped). Raise Recorder(spectrum_window=...) to make fewer windows.",
                    RuntimeWarning, stacklevel=4)
            return
        window.dropped, self._dropped[tag] = self._dropped[tag], 0
        self._submit(("spectrum", tag, window.last_step, window, _event(window.buffer)))
        if self._window_bytes * 2 > MAX_PENDING_WINDOW_BYTES:
            self._wake.set()  # rather than wait flush_secs holding them

    def log_gradients(self, step, model: torch.nn.Module):
        """Record the L2 norm of the gradients of each layer (the parameters a
        module holds itself, in model order) and of all of them together.
        Parameters without a gradient are skipped. Call after backward()."""
        step = self._check_open_and_step(step)
        if not isinstance(model, torch.nn.Module):
            raise ScorevizError(f"log_gradients: model must be a torch.nn.Module, got {type(model).__name__}")
        if step % self.every or self.rank != 0:
            return  # under DDP the gradients are already the same on every rank
        self._check_process()
        names, grads, owner = [], [], []
        for name, params in self._layers(model):
            with_grad = [p.grad for p in params if p.grad is not None]
            if with_grad:
                owner += [len(names)] * len(with_grad)
                names.append(name)
                grads += with_grad
        if not grads:
            return
        device = grads[0].device
        with torch.inference_mode():
            norms = torch._foreach_norm(grads)
            if any(n.device != device for n in norms):  # parameters on several devices (model parallel)
                norms = [n.to(device) for n in norms]
            squares = torch.stack(norms).double().square_()
            per_layer = torch.zeros(len(names), dtype=torch.float64, device=device)
            per_layer.index_add_(0, self._owner_index(owner, device), squares)
            row = torch.cat([per_layer, squares.sum()[None]]).sqrt_()
        self._submit(("gradients", tuple(names), step, row, _event(row)))

    def log_scalars(self, step, **values):
        """Record named numbers: floats, ints or one-element tensors (left on their device)."""
        step = self._check_open_and_step(step)
        if not values:
            raise ScorevizError("log_scalars: give at least one value, e.g. log_scalars(step, loss=loss)")
        cleaned = {arguments.name(key, "log_scalars: name"): arguments.scalar(value, key)
                   for key, value in values.items()}
        if self.rank != 0:
            return
        self._check_process()
        tensors = [v for v in cleaned.values() if isinstance(v, torch.Tensor)]
        self._submit(("scalars", tuple(cleaned), step, list(cleaned.values()), _event(*tensors)))

    # ------------------------------------------------------------ life cycle

    def flush(self):
        """Block until everything logged so far is on disk."""
        if self.rank != 0 or self._closed or os.getpid() != self._pid:
            return
        with self._done:
            target = self._submitted
            self._wake.set()
            while self._written < target and self._thread.is_alive():
                self._done.wait(timeout=0.5)
        self._raise_writer_error()

    def close(self):
        """Flush everything and close the file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._store is None or os.getpid() != self._pid:  # not the writing rank, or a forked child
            return
        # The last, incomplete spectrum windows: stored from one process; under torch.distributed
        # they would need the other ranks, and close() must not wait for them, so they are dropped.
        windows, self._windows = self._windows, {}
        if not self._distributed and self._error is None:
            for tag, window in windows.items():
                self._submit_window(tag, window, closing=True)
        with self._lock:
            self._stopping = True
        self._wake.set()
        self._thread.join()
        _open_recorders.discard(self)
        try:
            self._store.close()
        except ScorevizError as err:
            self._error = self._error or err
        self._raise_writer_error()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # ------------------------------------------------------------ internals

    def _check_open_and_step(self, step) -> int:
        if self._closed:
            raise ScorevizError(f"{self.path}: the Recorder is closed")
        if self.rank == 0:
            self._raise_writer_error()
        return arguments.step(step)

    def _check_process(self):
        if os.getpid() != self._pid:
            raise ScorevizError(f"{self.path}: this Recorder belongs to process {self._pid}; a forked child "
                                "cannot write through it (log from the main process)")

    def _in_process_group(self) -> bool:
        """Whether rows are reduced over ranks; checks, once torch.distributed is up, that
        it agrees with the rank this Recorder was built for."""
        if not self._distributed and torch.distributed.is_available() and torch.distributed.is_initialized():
            rank = torch.distributed.get_rank()
            if rank != self.rank:
                raise ScorevizError(f"{self.path}: this Recorder was built as rank {self.rank} (from the launcher's "
                                    f"environment) but torch.distributed says rank {rank}")
            self._distributed = True
        return self._distributed

    def _layers(self, model):
        """[(layer name, its own parameters)] in model order, built once per model."""
        if self._module_params is None or self._module_params[0] is not model:
            layers = [(arguments.layer_name(name), list(module.parameters(recurse=False)))
                      for name, module in model.named_modules()]
            self._module_params = (model, [(name, params) for name, params in layers if params])
        return self._module_params[1]

    def _owner_index(self, owner, device):
        """The layer of each gradient as a device tensor, built once: copying a list
        from the host to a GPU would wait for the GPU to catch up."""
        key = (tuple(owner), device)
        if self._owner_cache is None or self._owner_cache[0] != key:
            self._owner_cache = (key, torch.tensor(owner, device=device))
        return self._owner_cache[1]

    def _reduce(self, row):
        split = self._layout.sum_width
        torch.distributed.all_reduce(row[:split], op=torch.distributed.ReduceOp.SUM)
        torch.distributed.all_reduce(row[split:], op=torch.distributed.ReduceOp.MIN)

    def _submit(self, item):
        self._check_process()
        item = item[:3] + (time.time(),) + item[3:]
        with self._lock:
            self._pending.append(item)
            self._submitted += 1
            if len(self._pending) >= _WAKE_AT_PENDING:
                self._wake.set()

    def _raise_writer_error(self):
        if self._error is not None:  # a fresh exception each time, so tracebacks do not pile up
            raise ScorevizError(str(self._error)) from None

    def _writer_loop(self):
        while True:
            self._wake.wait(timeout=self._flush_secs)
            self._wake.clear()
            with self._lock:
                items, self._pending = self._pending, []
                stopping = self._stopping
            if items and self._error is None:
                try:
                    self._write(items)
                except ScorevizError as err:  # the store names the file and the errno
                    self._error = err
                except Exception as err:  # noqa: BLE001: reported on the next log call, flush or close
                    self._error = ScorevizError(f"{self.path}: recording failed ({type(err).__name__}: {err})")
            window_bytes = sum(item[4].nbytes for item in items if item[0] == "spectrum")
            with self._done:
                self._written += len(items)
                self._window_bytes -= window_bytes
                self._done.notify_all()
            if stopping:
                return

    def _write(self, items):
        for item in items:
            if item[-1] is not None:
                item[-1].synchronize()
        groups = defaultdict(list)  # rows of one stream and one tag or column set, in order
        for kind, key, step, when, values, _ in items:
            groups[kind, key].append((step, when, values))
        for (kind, key), entries in groups.items():
            steps = [s for s, _, _ in entries]
            times = [t for _, t, _ in entries]
            if kind == "scalars":
                values = np.array([[float(v) for v in vals] for _, _, vals in entries])
                self._store.append_scalars(steps, key, values, times)
                continue
            if kind == "spectrum":
                self._write_spectra(key, steps, [v for _, _, v in entries], times)
                continue
            rows = torch.stack([v for _, _, v in entries]).cpu().numpy()
            if kind == "gradients":
                self._store.append_gradients(steps, key, rows[:, :-1], rows[:, -1], times)
            elif kind == "embeddings":
                stats = summarize_embeddings(rows)
                self._warn_about_embeddings(key, steps, stats)
                self._store.append_embeddings(key, steps, stats, times)
            else:
                stats = summarize(rows, self._layout)
                self._warn_about(key, steps, stats)
                self._store.append_scores(key, steps, stats, times)
        self._store.flush()

    def _write_spectra(self, tag, steps, windows, times):
        """The eigen-decomposition of each window's second moment and the window's health
        signals, here on the writer thread."""
        dims = [window.dim for window in windows]
        results = []
        for window in windows:
            buffer, pairs, reference = window.host_arrays()
            results.append(window_statistics(buffer, window.dim, pairs, reference))
            results[-1]["windows_dropped"] = window.dropped
        samples = [r["samples"] for r in results]
        short = [i for i, (n, dim) in enumerate(zip(samples, dims)) if 0 < n < dim]
        if short and "few samples" not in self._warned:
            self._warned.add("few samples")
            i = short[0]
            warnings.warn(
                f"scoreviz: the spectrum of tag {tag!r} at step {steps[i]} has {samples[i]} samples for dim {dims[i]}: "
                "its rank cannot exceed the sample count. Raise Recorder(spectrum_window=...) so that window x "
                "batch exceeds dim.", RuntimeWarning, stacklevel=2)
        signals = {c: [r[c] for r in results] for c in SPECTRUM_COLUMNS}
        self._store.append_spectrum(tag, steps, dims, samples, [r["rank"] for r in results],
                                    [r["eigenvalues"] for r in results], signals, times)

    def _warn_about_embeddings(self, tag, steps, stats):
        bad = np.flatnonzero(stats["nonfinite"] > 0)
        if bad.size and "nonfinite embeddings" not in self._warned:
            self._warned.add("nonfinite embeddings")
            warnings.warn(f"scoreviz: {int(stats['nonfinite'][bad[0]])} embeddings of tag {tag!r} at step "
                          f"{steps[bad[0]]} hold non-finite values; they are counted and left out of the "
                          "statistics.", RuntimeWarning, stacklevel=2)

    def _warn_about(self, tag, steps, stats):
        for kind in KINDS:
            bad = np.flatnonzero(stats[f"{kind}_out_of_range"] > 0)
            if bad.size and "range" not in self._warned and tag not in self.unbounded_tags:
                self._warned.add("range")
                i = bad[0]
                warnings.warn(
                    f"scoreviz: {kind} scores of tag {tag!r} at step {steps[i]} lie outside [-1, 1] "
                    f"(min {stats[f'{kind}_min'][i]:.3g}, max {stats[f'{kind}_max'][i]:.3g}). log_scores expects "
                    "cosine similarities: if you passed logits (scores divided by a temperature), use "
                    "log_logits(step, logits, temperature) instead. Vectors that are not unit length (e.g. "
                    "after a feature transformation without re-normalisation) can leave [-1, 1] too. "
                    "Out-of-range scores count in every moment and in out_of_range, not in the histogram.", RuntimeWarning, stacklevel=2)
            bad = np.flatnonzero(stats[f"{kind}_nonfinite"] > 0)
            if bad.size and "nonfinite" not in self._warned:
                self._warned.add("nonfinite")
                warnings.warn(
                    f"scoreviz: {int(stats[f'{kind}_nonfinite'][bad[0]])} non-finite {kind} scores of tag {tag!r} "
                    f"at step {steps[bad[0]]}; they are counted and left out of the statistics.",
                    RuntimeWarning, stacklevel=2)





def _event(*tensors):
    """A CUDA event after the work producing `tensors`, so the writer thread can wait for it."""
    for t in tensors:
        if t.is_cuda:
            event = torch.cuda.Event()
            event.record()
            return event
    return None


def _environment():
    from scoreviz import __version__

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        world = torch.distributed.get_world_size()
    else:  # not initialised yet: the launcher's word (torchrun sets WORLD_SIZE)
        world = int(os.environ["WORLD_SIZE"]) if os.environ.get("WORLD_SIZE", "").isdigit() else 1
    return {
        "scoreviz": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device,
        "world_size": world,
        "hostname": socket.gethostname(),
        "argv": sys.argv,
        "pid": os.getpid(),
        "start_time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _rank() -> int:
    """This process's rank: torch.distributed's, else the launcher's, else 0."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    for variable in _LAUNCHER_RANKS:
        value = os.environ.get(variable, "").strip()
        if value.isdigit():
            return int(value)
    return 0


@atexit.register
def _close_open_recorders():
    for recorder in list(_open_recorders):
        try:
            recorder.close()
        except Exception as err:  # the interpreter is exiting: report, do not raise
            print(f"scoreviz: {err}", file=sys.stderr)
