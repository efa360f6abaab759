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

import argparse
import atexit
import datetime
import json
import operator
import os
import platform
import socket
import sys
import threading
import warnings
import weakref
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from scoreviz.errors import ScorevizError
from scoreviz.stats import KINDS, RowLayout, score_row, summarize
from scoreviz.store import FILE_NAME, StoreWriter

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP / DataParallel, torch.compile
_WAKE_AT_PENDING = 1024  # wake the writer early rather than hold more rows in memory
_open_recorders: "weakref.WeakSet[Recorder]" = weakref.WeakSet()


class Recorder:
    """Record score distributions, gradient norms and scalars of a training run.

    Args:
        run_dir: the run's folder; created if needed. Holds `scores.h5`; if that
            file exists the Recorder appends to it (resuming a run).
        config: the run's settings (a dict or an argparse.Namespace), stored as
            JSON; values JSON cannot hold are stored as strings.
        every: record scores, logits and gradients only at steps divisible by
            `every`; scalars are always recorded.
        bins: histogram bins over [-1, 1].
        flush_secs: the longest a logged step waits before it is on disk.
        unbounded_tags: names of tags whose scores may leave [-1, 1] by design,
            e.g. scores after a feature transformation that does not
            re-normalise. Out-of-range scores of these tags are counted as
            always, without the warning meant for logits passed as scores.

    Use it as a context manager, or call `close()`; a run that ends without
    either (an exception, a normal interpreter exit) is still flushed.
    """

    def __init__(self, run_dir, config=None, *, every: int = 1, bins: int = 100, flush_secs: float = 1.0,
                 unbounded_tags=()):
        self.every = _positive_int(every, "every")
        self.bins = _positive_int(bins, "bins")
        self.unbounded_tags = _tag_names(unbounded_tags, "unbounded_tags")
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / FILE_NAME
        self._layout = RowLayout(self.bins)
        self._distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.rank = torch.distributed.get_rank() if self._distributed else 0
        self._closed = False
        self._module_params = None  # (model, its layers), built by log_gradients
        self._owner_cache = None
        self._warned = set()
        if self.rank != 0:
            return
        config = _config_dict(config)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ScorevizError(f"{self.run_dir}: cannot create the run folder ({err})") from None
        self._store = StoreWriter(self.path, self.bins, config, _environment())
        self._flush_secs = float(flush_secs)
        self._pending = []
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._submitted = self._written = 0
        self._wake = threading.Event()
        self._error = None
        self._stopping = False
        self._thread = threading.Thread(target=self._writer_loop, name="scoreviz-writer", daemon=True)
        self._thread.start()
        _open_recorders.add(self)

    # ------------------------------------------------------------ logging

    def log_scores(self, step, pos, neg, tag: str = "train"):
        """Record positive and negative cosine scores (in [-1, 1]) of one step.

        pos and neg may have any shape and live on any device. The first
        dimension of `neg` is the sample: the mean over samples of each sample's
        own negative variance is kept too. Non-finite scores are counted and
        left out of every statistic.
        """
        self._log_scores(step, pos, neg, tag, 1.0, "log_scores")

    def _log_scores(self, step, pos, neg, tag, scale, caller):
        step = self._check_open_and_step(step)
        pos = _score_tensor(pos, "pos", caller)
        neg = _score_tensor(neg, "neg", caller)
        tag = _tag(tag)
        if step % self.every:
            return
        row = score_row(pos, neg.to(pos.device), self.bins, scale)
        if self._distributed:
            self._reduce(row)
        if self.rank == 0:
            self._submit(("scores", tag, step, row, _event(row)))

    def log_logits(self, step, logits, temperature: float, tag: str = "train"):
        """Record MoCo-style logits: (batch, 1 + negatives), column 0 the positive,
        already divided by `temperature`; they are multiplied back into scores."""
        logits = _score_tensor(logits, "logits", "log_logits")
        if logits.dim() != 2 or logits.shape[1] < 2:
            raise ScorevizError(f"log_logits: logits must have shape (batch, 1 + negatives), got {tuple(logits.shape)}")
        if not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ScorevizError(f"log_logits: temperature must be a positive number, got {temperature!r}")
        self._log_scores(step, logits[:, 0], logits[:, 1:], tag, float(temperature), "log_logits")

    def log_gradients(self, step, model: torch.nn.Module):
        """Record the L2 norm of the gradients of each layer (the parameters a
        module holds itself, in model order) and of all of them together.
        Parameters without a gradient are skipped. Call after backward()."""
        step = self._check_open_and_step(step)
        if not isinstance(model, torch.nn.Module):
            raise ScorevizError(f"log_gradients: model must be a torch.nn.Module, got {type(model).__name__}")
        if step % self.every or self.rank != 0:
            return  # under DDP the gradients are already the same on every rank
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
        per_param = torch.stack([n.to(device) for n in torch._foreach_norm([g.detach() for g in grads])]).double()
        squares = per_param.square()
        per_layer = torch.zeros(len(names), dtype=torch.float64, device=device)
        per_layer.index_add_(0, self._owner_index(owner, device), squares)
        row = torch.cat([per_layer.sqrt(), squares.sum().sqrt()[None]])
        self._submit(("gradients", tuple(names), step, row, _event(row)))

    def log_scalars(self, step, **values):
        """Record named numbers: floats, ints or one-element tensors (left on their device)."""
        step = self._check_open_and_step(step)
        if not values:
            raise ScorevizError("log_scalars: give at least one value, e.g. log_scalars(step, loss=loss)")
        cleaned = {}
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                if value.numel() != 1 or value.is_complex():
                    raise ScorevizError(f"log_scalars: {name} must be a single real number, got a tensor of shape {tuple(value.shape)}")
                value = value.detach().reshape(())
            elif isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
                value = float(value)
            else:
                raise ScorevizError(f"log_scalars: {name} must be a number or a one-element tensor, got {type(value).__name__}")
            cleaned[name] = value
        if self.rank != 0:
            return
        tensors = [v for v in cleaned.values() if isinstance(v, torch.Tensor)]
        self._submit(("scalars", tuple(cleaned), step, list(cleaned.values()), _event(*tensors)))

    # ------------------------------------------------------------ life cycle

    def flush(self):
        """Block until everything logged so far is on disk."""
        if self.rank != 0 or self._closed:
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
        if self.rank == 0:
            with self._lock:
                self._stopping = True
            self._wake.set()
            self._thread.join()
            self._store.close()
            _open_recorders.discard(self)
        self._closed = True
        if self.rank == 0:
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
        try:
            step = operator.index(step.item() if isinstance(step, torch.Tensor) else step)
        except (TypeError, RuntimeError, ValueError):
            raise ScorevizError(f"step must be a non-negative integer, got {step!r}") from None
        if step < 0:
            raise ScorevizError(f"step must be a non-negative integer, got {step}")
        return step

    def _layers(self, model):
        """[(layer name, its own parameters)] in model order, built once per model."""
        if self._module_params is None or self._module_params[0] is not model:
            layers = [(_layer_name(name), list(module.parameters(recurse=False)))
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
        with self._lock:
            self._pending.append(item)
            self._submitted += 1
            if len(self._pending) >= _WAKE_AT_PENDING:
                self._wake.set()

    def _raise_writer_error(self):
        if self._error is not None:
            raise ScorevizError(f"{self.path}: writing the run failed ({self._error})") from self._error

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
                except Exception as err:  # reported on the next log call or at close
                    self._error = err
            with self._done:
                self._written += len(items)
                self._done.notify_all()
            if stopping:
                return

    def _write(self, items):
        for item in items:
            if item[-1] is not None:
                item[-1].synchronize()
        groups = defaultdict(list)  # rows of one stream and one tag or column set, in order
        for kind, key, step, values, _ in items:
            groups[kind, key].append((step, values))
        for (kind, key), entries in groups.items():
            steps = [s for s, _ in entries]
            if kind == "scalars":
                values = np.array([[float(v) for v in vals] for _, vals in entries])
                self._store.append_scalars(steps, key, values)
                continue
            rows = torch.stack([v for _, v in entries]).cpu().numpy()
            if kind == "gradients":
                self._store.append_gradients(steps, key, rows[:, :-1], rows[:, -1])
            else:
                stats = summarize(rows, self._layout)
                self._warn_about(key, steps, stats)
                self._store.append_scores(key, steps, stats)
        self._store.flush()

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


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ScorevizError(f"Recorder: {name} must be a positive integer, got {value!r}")
    return value


def _score_tensor(x, name, where):
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise ScorevizError(f"{where}: {name} must be a torch.Tensor (or numpy array) of scores, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ScorevizError(f"{where}: {name} must hold floating-point scores, got dtype {x.dtype}")
    return x


def _tag(tag):
    if not isinstance(tag, str) or not tag:
        raise ScorevizError(f"log_scores: tag must be a non-empty string, got {tag!r}")
    return tag


def _tag_names(tags, name):
    """A frozenset of tag names from an iterable of strings (a lone string is refused: it is iterable too)."""
    try:
        names = frozenset(tags) if not isinstance(tags, str) else None
    except TypeError:
        names = None
    if names is None or not all(isinstance(t, str) for t in names):
        raise ScorevizError(f"Recorder: {name} must be an iterable of tag names, got {tags!r}")
    return names


def _event(*tensors):
    """A CUDA event after the work producing `tensors`, so the writer thread can wait for it."""
    for t in tensors:
        if t.is_cuda:
            event = torch.cuda.Event()
            event.record()
            return event
    return None


def _layer_name(name):
    for prefix in _WRAPPER_PREFIXES:
        while name.startswith(prefix):
            name = name[len(prefix):]
    return name or "(root)"


def _config_dict(config):
    if config is None:
        return {}
    if isinstance(config, argparse.Namespace):
        config = vars(config)
    if not isinstance(config, dict):
        raise ScorevizError(f"Recorder: config must be a dict or an argparse.Namespace, got {type(config).__name__}")
    return json.loads(json.dumps(config, default=str))


def _environment():
    from scoreviz import __version__

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    world = torch.distributed.get_world_size() if torch.distributed.is_available() and torch.distributed.is_initialized() else 1
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


@atexit.register
def _close_open_recorders():
    for recorder in list(_open_recorders):
        try:
            recorder.close()
        except Exception as err:  # the interpreter is exiting: report, do not raise
            print(f"scoreviz: {err}", file=sys.stderr)
