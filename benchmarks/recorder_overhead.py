"""What recording costs: scoreviz's Recorder against recording nothing, a naive
recorder (copy every score to the CPU and append it with h5py, the paper's tool's
way) and TensorBoard's SummaryWriter.add_histogram on the same scores.

    python benchmarks/recorder_overhead.py            # prints markdown tables
    python benchmarks/recorder_overhead.py --device cuda --arch resnet50 --batch 256 --queue 65536 \
        --image-size 224 --settings 1 2               # setting 1 with the trainer's ResNet-50 MoCo step, bf16
    PYTHONPATH=OLD_CHECKOUT python benchmarks/recorder_overhead.py --alone-only   # table 4's Recorder-alone
                                                      # lines, for another version of scoreviz/

Setting 1: a MoCo-like CPU training step (small conv encoder on 32x32 images,
batch 64, queue 4096, momentum encoder), recording every step; with --arch, the
reference trainer's own MoCo step instead (scoreviz.trainer.model, shuffle-BN
with 8 BN groups; on CUDA with bf16 autocast and channels_last, as `scoreviz
train` runs it), at --batch, --queue and --image-size, on --device.
Setting 2: the bare per-step cost at MoCo-ImageNet size (256 x 65536 scores).
Setting 3: file bytes per recorded step for 2 tags, 100 bins and 100 layers.
Setting 4: log_embeddings at dim 128 and 2048 (per call, and the spectrum's
eigen-decomposition and the window signals per window on the writer thread; then
each signal's own share of that, table 4b), and the Recorder alone with
and without embeddings as a share of setting 1's training step (setting 1 also
has a row with log_embeddings of the query and key projections).
Setting 5 (not run by default: about 8 minutes): the training step with the
Recorder beside it, without and with log_embeddings, against the bare step, in
cycles of short blocks whose order rotates, so that the machine's drift cancels
within a cycle; the mean difference per step and its standard error. Everything
is real there: the writer thread writes beside the training at its default cadence.
In setting 1 the recordings take turns in blocks of steps and each row is the
median over rounds (robust to the noise of a shared machine); the Recorder is
also timed alone there and in setting 4, with the writer made to write at the
cadence its default flush_secs gives and waited for (its close(), once per run,
timed apart); in settings 2 and 3 every time includes the recorder's deferred
work (writer threads flushed and closed inside the timing), so nothing is hidden
in a background thread.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import math
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import h5py
import torch
import torch.nn as nn
import torch.nn.functional as F

import scoreviz

FLUSH_SECS = inspect.signature(scoreviz.Recorder).parameters["flush_secs"].default


def folder_bytes(path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


# ---------------------------------------------------------------- recorders


class NoRecording:
    name = "no recording"

    def __init__(self, folder):
        self.folder = folder
        os.makedirs(folder, exist_ok=True)

    def record(self, step, logits, temperature, model, loss):
        pass

    def close(self):
        pass


class ScorevizRecording(NoRecording):
    name = "scoreviz Recorder"

    def __init__(self, folder):
        super().__init__(folder)
        self.rec = scoreviz.Recorder(folder)

    def record(self, step, logits, temperature, model, loss):
        self.rec.log_logits(step, logits, temperature)
        if model is not None:
            self.rec.log_gradients(step, model)
        self.rec.log_scalars(step, loss=loss)

    def close(self):
        self.rec.close()


class NaiveRecording(NoRecording):
    """Every score copied to the host each step and appended to HDF5."""

    name = "naive: copy to CPU + h5py"

    def __init__(self, folder):
        super().__init__(folder)
        self.file = h5py.File(Path(folder) / "scores.h5", "w")
        self.n = 0

    def record(self, step, logits, temperature, model, loss):
        scores = (logits.detach().float() * temperature).cpu().numpy()
        if self.n == 0:
            b, k = scores.shape
            self.pos = self.file.create_dataset("pos", (0, b), maxshape=(None, b), chunks=(1, b), dtype="f4")
            self.neg = self.file.create_dataset("neg", (0, b, k - 1), maxshape=(None, b, k - 1),
                                                chunks=(1, b, k - 1), dtype="f4")
            self.loss = self.file.create_dataset("loss", (0,), maxshape=(None,), chunks=(1024,), dtype="f4")
        for ds, value in ((self.pos, scores[:, 0]), (self.neg, scores[:, 1:]), (self.loss, float(loss))):
            ds.resize(self.n + 1, axis=0)
            ds[self.n] = value
        self.n += 1

    def close(self):
        self.file.close()


class TensorBoardRecording(NoRecording):
    name = "TensorBoard add_histogram"

    def __init__(self, folder):
        super().__init__(folder)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(folder)

    def record(self, step, logits, temperature, model, loss):
        scores = logits.detach().float() * temperature
        self.writer.add_histogram("pos", scores[:, 0], step)
        self.writer.add_histogram("neg", scores[:, 1:], step)
        self.writer.add_scalar("loss", float(loss), step)

    def close(self):
        self.writer.close()


RECORDINGS = (NoRecording, ScorevizRecording, NaiveRecording, TensorBoardRecording)


class ScorevizEmbeddingsRecording(ScorevizRecording):
    """The Recorder as above, plus log_embeddings of the step's query and key projections."""

    name = "scoreviz Recorder + log_embeddings (64 x 128, two views)"

    def record(self, step, logits, temperature, model, loss):
        super().record(step, logits, temperature, model, loss)
        self.rec.log_embeddings(step, *model.last_embeddings)


TRAINING_RECORDINGS = RECORDINGS + (ScorevizEmbeddingsRecording,)  # setting 1 only


# ---------------------------------------------------------------- the MoCo-like step


class SmallConv(nn.Module):
    def __init__(self, dim=128):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=1, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 128, 3, stride=2, padding=1), nn.BatchNorm2d(128), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, dim))

    def forward(self, x):
        return self.head(self.features(x))


class MocoStep:
    """One MoCo v2 step: query and momentum key encoders, a queue, InfoNCE."""

    def __init__(self, batch=64, queue=4096, dim=128, temperature=0.2, m=0.99):
        self.q = SmallConv(dim)
        self.k = copy.deepcopy(self.q).requires_grad_(False)
        self.queue = F.normalize(torch.randn(queue, dim), dim=1)
        self.ptr = 0
        self.batch, self.temperature, self.m = batch, temperature, m
        self.opt = torch.optim.SGD(self.q.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4)
        self.images = torch.rand(batch * 4, 3, 32, 32)

    def views(self):
        x = self.images[torch.randint(len(self.images), (self.batch,))]
        flip = torch.rand(self.batch, 1, 1, 1) < 0.5
        one = torch.where(flip, x.flip(3), x) + 0.05 * torch.randn_like(x)
        two = torch.where(~flip, x.flip(3), x) + 0.05 * torch.randn_like(x)
        return one, two

    def __call__(self):
        x1, x2 = self.views()
        q = F.normalize(self.q(x1), dim=1)
        with torch.no_grad():
            for pk, pq in zip(self.k.parameters(), self.q.parameters()):
                pk.mul_(self.m).add_(pq.detach(), alpha=1 - self.m)
            k = F.normalize(self.k(x2), dim=1)
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ self.queue.T], dim=1) / self.temperature
        loss = F.cross_entropy(logits, torch.zeros(self.batch, dtype=torch.long))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.queue[self.ptr:self.ptr + self.batch] = k
        self.ptr = (self.ptr + self.batch) % len(self.queue)
        self.q.last_embeddings = (q.detach(), k)  # for ScorevizEmbeddingsRecording
        return logits.detach(), loss.detach()


class TrainerStep:
    """The reference trainer's MoCo v2 step, on random images (no augmentation), as the trainer runs it."""

    def __init__(self, arch, device, batch, queue, image_size, temperature=0.2):
        from scoreviz.trainer.model import MoCo, build_backbone

        self.device, self.batch, self.temperature = torch.device(device), batch, temperature
        self.cuda = self.device.type == "cuda"
        memory_format = torch.channels_last if self.cuda else torch.contiguous_format
        self.model = MoCo(build_backbone(arch, 3, image_size, bn_splits=8), 128, queue, 0.99, temperature, True)
        self.model = self.model.to(self.device, memory_format=memory_format)
        self.q = self.model.encoder_q  # the module whose gradients are recorded
        self.opt = torch.optim.SGD(self.q.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4)
        self.views = [torch.randn(batch, 3, image_size, image_size, device=self.device).contiguous(memory_format=memory_format)
                      for _ in range(2)]
        self.labels = torch.zeros(batch, dtype=torch.long, device=self.device)

    def __call__(self):
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cuda):
            logits, raw, _ = self.model(*self.views)
        self.q.last_embeddings = (raw.q, raw.k)  # for ScorevizEmbeddingsRecording
        loss = F.cross_entropy(logits, self.labels)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return logits.detach(), loss.detach()


def _wait(device):
    """Let queued GPU work finish, so that a timing covers it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------- settings


def training_step_setting(workdir, rounds, steps, make_step=MocoStep, device="cpu"):
    """Median over rounds of the mean training-step time with each recording.

    The recordings take turns in blocks of `steps` steps: finer interleaving lets
    one recording's leftover work (TensorBoard's writer thread, numpy's spinning
    threads) land in the next one's steps on a 2-core machine.
    """
    torch.manual_seed(0)
    train = make_step()
    for _ in range(10):  # warm up
        train()
    times = {cls: [] for cls in TRAINING_RECORDINGS}
    recordings = {cls: cls(os.path.join(workdir, f"train-{i}")) for i, cls in enumerate(TRAINING_RECORDINGS)}
    step = 0
    for r in range(rounds):
        for cls, recording in recordings.items():
            _wait(device)
            start = time.perf_counter()
            for _ in range(steps):
                logits, loss = train()
                recording.record(step, logits, train.temperature, train.q, loss)
                step += 1
            if r == rounds - 1:
                recording.close()  # its deferred work counts too
            _wait(device)
            times[cls].append((time.perf_counter() - start) / steps)
    base = statistics.median(times[NoRecording])
    rows = []
    for cls, recording in recordings.items():
        t = statistics.median(times[cls])
        rows.append((cls.name, t * 1e3, (t - base) * 1e3, 100 * (t - base) / base,
                     folder_bytes(recording.folder) / (rounds * steps)))
    return rows


FLUSH_EVERY = None  # --flush-every: a fixed number of steps per writer flush instead


def cadence(per_flush) -> str:
    """How often the writer was flushed, for the printed lines."""
    how = "--flush-every" if FLUSH_EVERY else f"as flush_secs={FLUSH_SECS:g} does at this step length"
    return f"flushed every {per_flush:.0f} steps {how}"


def steps_per_flush(step_seconds: float) -> int:
    """Steps a writer flush holds at the Recorder's default flush_secs for a step of this length."""
    return FLUSH_EVERY or max(1, round(FLUSH_SECS / step_seconds))


def recorder_alone(recording, logits, temperature, model, loss, first_step, calls, per_flush, device="cpu"):
    """(seconds per step the Recorder costs on its own, the part of it spent waiting for the
    writer, seconds of the close() that ends the run): about `calls` record calls, a whole number
    of flushes' worth, the writer made to write every `per_flush` of them (as its default
    flush_secs would at this step length) and waited for, so the writer's work counts at its
    real cadence, as if it had no core of its own. What a run pays once is timed apart: the file
    and its datasets are made before the timing, and close() (the last spectrum windows, closing
    the file) after it."""
    calls = per_flush * max(1, round(calls / per_flush))  # the last call is the last flush's
    recording.record(first_step, logits, temperature, model, loss)
    recording.rec.flush()
    _wait(device)
    start = time.perf_counter()
    waiting = 0.0  # in flush(): the writer's work
    for i in range(1, calls + 1):
        recording.record(first_step + i, logits, temperature, model, loss)
        if i % per_flush == 0:
            _wait(device)
            before = time.perf_counter()
            recording.rec.flush()
            waiting += time.perf_counter() - before
    end = time.perf_counter()
    recording.close()
    return (end - start) / calls, waiting / calls, time.perf_counter() - end


def recorder_call_cost(step_seconds, calls=300, make_step=MocoStep, device="cpu"):
    """The Recorder's own time per step at setting 1's sizes, measured alone (less noise)."""
    torch.manual_seed(0)
    train = make_step()
    logits, loss = train()
    with tempfile.TemporaryDirectory() as folder:
        return recorder_alone(ScorevizRecording(folder), logits, train.temperature, train.q, loss, 0, calls,
                              steps_per_flush(step_seconds), device)[0]


def bare_setting(workdir, calls, batch=256, negatives=65536, temperature=0.2, device="cpu"):
    """Time per record call (deferred work included) on (batch, 1 + negatives) logits."""
    torch.manual_seed(0)
    scores = torch.empty(batch, 1 + negatives).uniform_(-0.3, 0.3)
    scores[:, 0] = torch.empty(batch).uniform_(0.5, 1.0)
    logits = (scores / temperature).to(device)
    rows = []
    for i, cls in enumerate(RECORDINGS[1:]):
        recording = cls(os.path.join(workdir, f"bare-{i}"))
        recording.record(0, logits, temperature, None, 1.0)  # warm up (creates datasets)
        _wait(device)
        start = time.perf_counter()
        for step in range(1, calls + 1):
            recording.record(step, logits, temperature, None, 1.0)
        recording.close()
        _wait(device)
        t = (time.perf_counter() - start) / calls
        rows.append((cls.name, t * 1e3, folder_bytes(recording.folder) / (calls + 1)))
    return rows


def file_size_setting(workdir, steps, rows_per_flush):
    """Bytes per recorded step: 2 tags, 100 bins, 100 layers, flushed every `rows_per_flush` steps."""
    model = nn.Sequential(*[nn.Linear(8, 8) for _ in range(100)])
    model(torch.randn(2, 8)).sum().backward()
    folder = os.path.join(workdir, f"size-{rows_per_flush}")
    with scoreviz.Recorder(folder, bins=100) as rec:
        for step in range(steps):
            pos, neg = torch.rand(64), torch.rand(64, 512) * 2 - 1
            rec.log_scores(step, pos, neg, tag="raw")
            rec.log_scores(step, pos * 0.9, neg, tag="ft")
            rec.log_gradients(step, model)
            rec.log_scalars(step, loss=1.0, lr=0.1)
            if (step + 1) % rows_per_flush == 0:
                rec.flush()
    return folder_bytes(folder) / steps


def setting_one(workdir, args, make_step, title, device):
    print(f"\n1. {title}, every step recorded\n")
    print("| recording | time per step (ms) | cost per step (ms) | overhead | bytes written per step* |")
    print("|---|---:|---:|---:|---:|")
    rows = training_step_setting(workdir, args.rounds, args.steps, make_step, device)
    for name, ms, cost, overhead, size in rows:
        print(f"| {name} | {ms:.1f} | {cost:+.2f} | {overhead:+.1f}% | {size:,.0f} |")
    step_seconds = rows[0][1] / 1e3
    alone = recorder_call_cost(step_seconds, 30 if args.arch else 300, make_step, device)
    print(f"\nThe Recorder measured alone at these sizes (log_logits, log_gradients, log_scalars, "
          f"writer work included, {cadence(steps_per_flush(step_seconds))}): {alone * 1e3:.2f} ms per step = {100 * alone / step_seconds:.1f}% "
          f"of the {rows[0][1]:.1f} ms step.")
    print("* over this short run: HDF5 allocates whole chunks up front; table 3 gives the size of a long run.")


def setting_two(workdir, args, device):
    print(f"\n2. Bare recording cost at MoCo-ImageNet size (256 x 65536 negative scores, on {device})\n")
    print("| recording | time per step (ms) | bytes written per step |")
    print("|---|---:|---:|")
    bare = bare_setting(workdir, args.bare_calls, device=device)
    for name, ms, size in bare:
        print(f"| {name} | {ms:.1f} | {size:,.0f} |")
    ours = bare[0][1]
    print(f"\nscoreviz is {bare[2][1] / ours:.1f}x cheaper than TensorBoard add_histogram, "
          f"{bare[1][1] / ours:.1f}x cheaper than the naive recorder.")


def setting_three(workdir, args):
    print("\n3. File size: 2 tags, 100 bins, 100 layers, loss and lr\n")
    print("| rows per flush | bytes per recorded step |")
    print("|---:|---:|")
    for rows_per_flush in (1, 10, 1000):
        size = file_size_setting(workdir, args.size_steps, rows_per_flush)
        print(f"| {rows_per_flush} | {size:,.0f} |")


# ---------------------------------------------------------------- embeddings (log_embeddings)


def embeddings_call_cost(batch, dim, calls, window=50):
    """Per log_embeddings call (two views) on the CPU: the training thread's time, and the
    whole cost with the writer's work (spectra included, close() inside the timing)."""
    torch.manual_seed(0)
    z = torch.randn(batch, dim)
    z2 = z + 0.1 * torch.randn(batch, dim)
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the last, incomplete window has few samples
        rec = scoreviz.Recorder(folder, spectrum_window=window)
        rec.log_embeddings(0, z, z2)  # warm up
        start = time.perf_counter()
        for step in range(1, calls + 1):
            rec.log_embeddings(step, z, z2)
        on_thread = time.perf_counter() - start
        rec.close()
        return on_thread / calls, (time.perf_counter() - start) / calls


def window_sums(dim, batch=None):
    """A SpectrumWindow of one batch of 4 x dim samples (two views), and its host arrays."""
    from scoreviz.embeddings import SpectrumWindow, normalised

    z = torch.randn(batch or 4 * dim, dim)
    x, x2, valid = normalised(z, z + 0.1 * torch.randn_like(z))
    window = SpectrumWindow(dim, "cpu")
    window.add(x, valid, x.mean(dim=0), x2)
    return window, (x, x2, valid)


def fastest(work, repeats):
    """The shortest of `repeats` timings of work(), in seconds (the least disturbed on a shared machine)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def spectrum_host_cost(dim, repeats=3):
    """The writer thread's work for one window: the spectrum (eigenvalues, RankMe) and every signal."""
    from scoreviz.embeddings import window_statistics

    window, _ = window_sums(dim)
    return fastest(lambda: window_statistics(*_host(window)), repeats)


def _host(window):
    buffer, pairs, reference = window.host_arrays()
    return buffer, window.dim, pairs, reference


def signal_costs(batch, dim, repeats):
    """{signal: (seconds per call on the training thread, seconds per window on the writer thread)}
    of each window signal at this size, the spectrum and RankMe (which they all start from) first."""
    from scoreviz import signals
    from scoreviz.embeddings import _pair_covariances, effective_rank, window_statistics

    window, (x, x2, valid) = window_sums(dim, batch)
    reference = x.mean(dim=0).double()
    add = fastest(lambda: window.add(x, valid, reference), repeats)
    add_pairs = fastest(lambda: window.add(x, valid, reference, x2), repeats)
    buffer, _, pairs, mean = _host(window)
    eigenvalues = window_statistics(buffer, dim, pairs, mean)["eigenvalues"]
    host_repeats = max(3, repeats // 10)
    spectrum = fastest(lambda: window_statistics(buffer, dim), host_repeats)
    pairs64 = pairs.astype("float64")
    return {
        "spectrum and RankMe (as before; every signal starts from it)": (add, spectrum),
        "alpha_req, alpha_req_r2": (0.0, fastest(lambda: signals.alpha_req(eigenvalues), repeats)),
        "nesum": (0.0, fastest(lambda: signals.nesum(eigenvalues), repeats)),
        "participation_ratio": (0.0, fastest(lambda: signals.participation_ratio(eigenvalues), repeats)),
        "w2_uniformity": (0.0, fastest(lambda: signals.w2_uniformity(eigenvalues, mean), repeats)),
        "lidar (with a second view)": (add_pairs - add, fastest(
            lambda: signals.lidar(*_pair_covariances(pairs64, batch, dim)), host_repeats)),
        "(RankMe's rank alone, for scale)": (0.0, fastest(lambda: effective_rank(eigenvalues), repeats)),
    }


SIGNAL_WINDOW = inspect.signature(scoreviz.Recorder).parameters["spectrum_window"].default  # table 4b's per step


def bare_step_seconds(steps=20):
    """The bare MoCo-like CPU step (setting 1's), the shortest of `steps` after a warm-up: timed in the
    same run as table 4b, and its least disturbed step, as the signals' costs are their shortest."""
    torch.manual_seed(0)
    train = MocoStep()
    for _ in range(3):
        train()
    return fastest(train, steps)


def print_signal_table(calls):
    sizes = ((64, 128), (256, 2048))
    costs = {size: signal_costs(*size, calls if size[1] <= 128 else 3) for size in sizes}
    bare = bare_step_seconds()
    print(f"\n4b. The window signals, each: what it adds on the training thread per log_embeddings call "
          f"(two views) and on the writer thread per window, and the two per step at spectrum_window="
          f"{SIGNAL_WINDOW} (the call's cost plus a {SIGNAL_WINDOW}th of the window's, as if the writer had no core "
          f"of its own), CPU, shortest of repeated timings; at 64 x 128 also as a share of the bare MoCo-like CPU "
          f"step of setting 1, timed in this run: {bare * 1e3:.1f} ms (the shortest of 20 steps)\n")

    def per_step(cost):
        return cost[0] + cost[1] / SIGNAL_WINDOW

    signal_names = [name for name in costs[sizes[0]] if not name.startswith(("spectrum", "("))]
    together = "the five signals together (what they add to the spectrum)"
    for size in sizes:
        costs[size][together] = tuple(sum(costs[size][name][i] for name in signal_names) for i in (0, 1))
    rows = [name for name in costs[sizes[0]] if name != together]
    rows.insert(rows.index(signal_names[-1]) + 1, together)
    print("| signal | " + " | ".join(f"{b} x {d}: training thread per call (ms) | {b} x {d}: writer per window (ms) "
                                      f"| {b} x {d}: per step (ms)" for b, d in sizes)
          + " | 64 x 128: share of the MoCo step |")
    print("|---|" + "---:|---:|---:|" * len(sizes) + "---:|")
    for name in rows:
        cells = " | ".join(f"{costs[size][name][0] * 1e3:.3f} | {costs[size][name][1] * 1e3:.3f} "
                           f"| {per_step(costs[size][name]) * 1e3:.3f}" for size in sizes)
        print(f"| {name} | {cells} | {100 * per_step(costs[sizes[0]][name]) / bare:.3f}% |")


ALONE_ROUNDS = 15  # rounds of the Recorder-alone timing in table 4


def recorder_alone_with_and_without_embeddings(calls=130, rounds=ALONE_ROUNDS):
    """The Recorder's own time per step at setting 1's sizes, without and with log_embeddings of
    the query and key projections (64 x 128), and each as a share of the bare MoCo-like step timed
    in the same round just before it (a shared machine's speed drifts within minutes: a share of a
    step timed at another moment can be off by half), writer work included at the default flush
    cadence (recorder_alone). Returns ({False: without, True: with embeddings}, each a dict of
    medians over rounds: seconds, share, writer (seconds of the writer's work per step), close
    (seconds, once per run); low, high: the smallest and largest share of a round; fastest: the
    Recorder's shortest time of a round and fastest_bare: the bare step's (each the least
    disturbed of its rounds on a shared machine)), and the median number of steps per flush."""
    torch.manual_seed(0)
    train = MocoStep()
    logits, loss = train()
    rounds_of = {False: [], True: []}  # (seconds, share, writer, close) per round
    flushes = []
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the last, incomplete window has few samples
        for r in range(rounds):
            for embeddings in (False, True):
                start = time.perf_counter()
                for _ in range(10):
                    train()
                bare = (time.perf_counter() - start) / 10
                flushes.append(steps_per_flush(bare))
                recording = (ScorevizEmbeddingsRecording if embeddings else ScorevizRecording)(
                    os.path.join(folder, f"alone-{r}-{embeddings}"))
                cost, waiting, close = recorder_alone(recording, logits, train.temperature, train.q, loss, 0, calls,
                                                      flushes[-1])
                rounds_of[embeddings].append((cost, cost / bare, waiting, close, bare))
    summary = {}
    for embeddings, measured in rounds_of.items():
        seconds, share, writer, close, _ = (statistics.median(column) for column in zip(*measured))
        shares = [m[1] for m in measured]
        summary[embeddings] = {"seconds": seconds, "share": share, "writer": writer, "close": close,
                               "low": min(shares), "high": max(shares), "fastest": min(m[0] for m in measured),
                               "fastest_bare": min(m[4] for m in measured)}
    return summary, statistics.median(flushes)


def embedding_file_bytes(workdir, steps, batch=64, dim=128, window=50):
    """File bytes per recorded step of log_embeddings alone (two views), flushed every 10 steps."""
    torch.manual_seed(0)
    folder = os.path.join(workdir, f"embedding-size-{dim}")
    with scoreviz.Recorder(folder, spectrum_window=window) as rec:
        for step in range(steps):
            z = torch.randn(batch, dim)
            rec.log_embeddings(step, z, z + 0.1 * torch.randn(batch, dim))
            if (step + 1) % 10 == 0:
                rec.flush()
    return folder_bytes(folder) / steps


def print_recorder_alone():
    """The Recorder-alone lines of table 4 (ALONE_ROUNDS rounds), with and without log_embeddings."""
    summary, per_flush = recorder_alone_with_and_without_embeddings()
    rounds = ALONE_ROUNDS

    def described(m):
        return (f"{m['seconds'] * 1e3:.2f} ms per step = {100 * m['share']:.1f}% of the step ({100 * m['low']:.1f} "
                f"to {100 * m['high']:.1f}% over {rounds} rounds; {m['writer'] * 1e3:.2f} ms of it the writer's)")
    print(f"\nThe Recorder alone at setting 1's sizes (writer work included, {cadence(per_flush)}, rounds "
          f"alternating, each against the bare MoCo-like step timed just before it; medians of {rounds} rounds): "
          f"{described(summary[False])}; with log_embeddings(step, q, k) (64 x 128) {described(summary[True])}. "
          f"Once per run, not per step: close() {summary[False]['close'] * 1e3:.0f} ms, "
          f"{summary[True]['close'] * 1e3:.0f} ms with embeddings (its last spectrum window).")
    bare = min(summary[False]["fastest_bare"], summary[True]["fastest_bare"])
    print(f"\nThe fastest of those rounds (each the least disturbed of its {rounds}, for a machine shared "
          f"with other work): the bare step {bare * 1e3:.1f} ms; the Recorder {summary[False]['fastest'] * 1e3:.2f} ms "
          f"= {100 * summary[False]['fastest'] / bare:.1f}% of it, with log_embeddings "
          f"{summary[True]['fastest'] * 1e3:.2f} ms = {100 * summary[True]['fastest'] / bare:.1f}%.")


def print_embedding_tables(calls, size_steps, workdir):
    print("\n4. Embedding statistics: log_embeddings with two views, CPU, spectrum window 50\n")
    print("| embeddings (batch x dim) | per call, training thread (ms) | per call, writer work included (ms) "
          "| spectrum and signals per window, writer thread (ms) | the same per step at window 50 (ms) |")
    print("|---|---:|---:|---:|---:|")
    for batch, dim in ((64, 128), (256, 2048)):
        on_thread, total = embeddings_call_cost(batch, dim, calls if dim <= 128 else 50)  # 50: one window
        host = spectrum_host_cost(dim)
        print(f"| {batch} x {dim} | {on_thread * 1e3:.2f} | {total * 1e3:.2f} | {host * 1e3:.1f} | {host * 1e3 / 50:.2f} |")
    print(f"\nFile size of log_embeddings alone (64 x 128, two views, window 50, {size_steps:,} steps): "
          f"{embedding_file_bytes(workdir, size_steps):,.0f} bytes per recorded step.")
    print_signal_table(calls)
    print_recorder_alone()


# ---------------------------------------------------------------- paired (setting 5)


def paired_setting(workdir, cycles, steps, make_step=MocoStep):
    """The training step with the Recorder (without and with log_embeddings) against the bare
    step: `cycles` cycles of one block of `steps` steps per recording, the order rotated every
    cycle. Returns the bare step's mean seconds and, per recording, (name, mean difference per
    step, its standard error), the differences taken within each cycle."""
    torch.manual_seed(0)
    train = make_step()
    for _ in range(10):  # warm up
        train()
    arms = [NoRecording, ScorevizRecording, ScorevizEmbeddingsRecording]
    recordings = {cls: cls(os.path.join(workdir, f"paired-{i}")) for i, cls in enumerate(arms)}
    times = {cls: [] for cls in arms}
    step = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the last, incomplete window has few samples
        for cycle in range(cycles):
            for cls in arms[cycle % 3:] + arms[:cycle % 3]:
                start = time.perf_counter()
                for _ in range(steps):
                    logits, loss = train()
                    recordings[cls].record(step, logits, train.temperature, train.q, loss)
                    step += 1
                times[cls].append((time.perf_counter() - start) / steps)
        for recording in recordings.values():
            recording.close()
    bare = times[NoRecording]
    rows = []
    for cls in arms[1:]:
        differences = [t - b for t, b in zip(times[cls], bare)]
        rows.append((cls.name, statistics.mean(differences),
                     statistics.stdev(differences) / math.sqrt(len(differences))))
    return statistics.mean(bare), rows


def setting_five(workdir, args):
    print(f"\n5. The MoCo-like CPU step with the Recorder beside it: {args.cycles} cycles of one block of "
          f"{args.cycle_steps} steps per recording, the order rotated every cycle (the writer at its default "
          f"flush_secs={FLUSH_SECS:g})\n")
    bare, rows = paired_setting(workdir, args.cycles, args.cycle_steps)
    print("| recording | cost per step (ms), mean ± standard error | share of the step |")
    print("|---|---:|---:|")
    for name, mean, error in rows:
        print(f"| {name} | {mean * 1e3:+.2f} ± {error * 1e3:.2f} | {100 * mean / bare:+.1f}% ± {100 * error / bare:.1f}% |")
    print(f"\nThe bare step: {bare * 1e3:.1f} ms (mean over {args.cycles} blocks).")


def main():
    parser = argparse.ArgumentParser(description="Measure what recording costs per training step.")
    parser.add_argument("--rounds", type=int, default=7, help="rounds in setting 1")
    parser.add_argument("--steps", type=int, default=25, help="training steps per round and recording in setting 1")
    parser.add_argument("--bare-calls", type=int, default=3, help="record calls per recorder in setting 2")
    parser.add_argument("--size-steps", type=int, default=5000, help="recorded steps in setting 3")
    parser.add_argument("--settings", type=int, nargs="+", default=[1, 2, 3, 4], choices=[1, 2, 3, 4, 5],
                        help="which to run (5, about 8 minutes, only when named)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda: where setting 1 trains and setting 2's scores live")
    parser.add_argument("--arch", choices=["small", "resnet18", "resnet50"],
                        help="setting 1 times the reference trainer's MoCo step with this backbone "
                             "(default: the small conv step above)")
    parser.add_argument("--batch", type=int, default=64, help="setting 1 with --arch: batch")
    parser.add_argument("--queue", type=int, default=4096, help="setting 1 with --arch: queue size K")
    parser.add_argument("--image-size", type=int, default=32, help="setting 1 with --arch: image size")
    parser.add_argument("--cycles", type=int, default=600, help="cycles in setting 5")
    parser.add_argument("--cycle-steps", type=int, default=2, help="training steps per block in setting 5")
    parser.add_argument("--embedding-calls", type=int, default=200, help="log_embeddings calls per size in setting 4")
    parser.add_argument("--alone-only", action="store_true",
                        help="print only table 4's Recorder-alone lines (they time nothing but the Recorder's public "
                             "API, so an older scoreviz/ on PYTHONPATH can be compared with this one)")
    parser.add_argument("--flush-every", type=int, metavar="STEPS",
                        help=f"the Recorder-alone timings flush the writer every STEPS steps (default: as often as "
                             f"flush_secs={FLUSH_SECS:g}, the Recorder's default, does at the measured step length)")
    args = parser.parse_args()
    if args.cycles < 2 or args.cycle_steps < 1:
        parser.error(f"--cycles must be at least 2 and --cycle-steps at least 1, got {args.cycles} and {args.cycle_steps}")
    if args.alone_only and (args.arch or args.device != "cpu"):
        parser.error("--alone-only times the Recorder beside the small MoCo-like CPU step only; "
                     "leave out --arch and --device")
    if args.flush_every is not None and args.flush_every < 1:
        parser.error(f"--flush-every must be at least 1, got {args.flush_every}")
    global FLUSH_EVERY
    FLUSH_EVERY = args.flush_every
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {where}")
    if args.arch:
        def make_step():
            return TrainerStep(args.arch, device, args.batch, args.queue, args.image_size)
        precision = ", bf16 autocast, channels_last" if device.type == "cuda" else ""
        title = (f"the trainer's MoCo v2 step on {where} ({args.arch} at {args.image_size} px, batch {args.batch}, "
                 f"queue {args.queue}, 8 BN groups{precision})")
    else:
        make_step, title = MocoStep, "MoCo-like training step on CPU (conv encoder, batch 64, queue 4096)"
    if args.alone_only:
        print(f"scoreviz from {Path(scoreviz.__file__).parent}")
        print_recorder_alone()
        return
    with tempfile.TemporaryDirectory() as workdir:
        if 1 in args.settings:
            setting_one(workdir, args, make_step, title, device)
        if 2 in args.settings:
            setting_two(workdir, args, device)
        if 3 in args.settings:
            setting_three(workdir, args)
        if 4 in args.settings:
            # the shares in table 4 are of the small CPU step, also when setting 1 timed the trainer's
            print_embedding_tables(args.embedding_calls, args.size_steps, workdir)
        if 5 in args.settings:
            setting_five(workdir, args)


if __name__ == "__main__":
    main()
