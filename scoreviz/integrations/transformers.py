"""A Hugging Face Trainer callback that records a contrastive model's scores.

    from scoreviz.integrations.transformers import ScorevizCallback
    trainer = transformers.Trainer(model, args, train_dataset=..., callbacks=[ScorevizCallback("runs/clip")])
    trainer.train()

The callback watches the model's forward outputs. By default it finds the
scores in them itself: a CLIP-style output with two `*_embeds` fields of the
same shape, scored in the in-batch layout (log_logits' positives="diagonal":
CLIP, SigLIP, CLAP, ...: row i of the first and row i of the second are a pair,
the positive; every other row of the second is an in-batch negative), or a model
that returns `pos` and `neg` cosine scores. Anything else: pass
`scores=lambda outputs: (pos, neg)`.

What is recorded, at the Trainer's own step numbers (state.global_step, the ones
its TensorBoard or W&B logs show):
- scores under tag "train" for every optimizer step; with gradient accumulation
  the micro-batches of a step make one record. Under tag "eval", the scores of
  each evaluation (its first `max_eval_batches` batches) at the step it ran;
- per-layer gradient norms before each optimizer step (after the Trainer's
  gradient clipping: what the optimizer applies; the Trainer's `grad_norm`
  scalar is the total before clipping);
- scalars: `loss` (the mean training loss of the step) and `lr` every step, and
  every other number the Trainer logs (grad_norm, eval_loss, epoch, ...) at its
  logging steps.
Batches of one record whose in-batch negatives differ in number (a shorter last
batch) are left out of it: their scores come from a smaller batch.

An exception inside `Trainer.train()` (which tells no callback) ends the recording as
`on_train_end` would: the callback wraps the `train` method of the Trainer it is given
to, and on an exception removes its hook and closes its Recorder (what was logged is
flushed), so the model works as before and a new callback resumes the run. A callback
added with `trainer.add_callback` after the Trainer was built learns of it later: at the
model's next forward pass outside training, or when a new callback opens the same run.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import weakref
from collections import Counter, defaultdict

import torch
import torch.nn.functional as F

from scoreviz import arguments
from scoreviz.errors import ScorevizError
from scoreviz.logits import split as split_logits
from scoreviz.recorder import Recorder

try:
    import transformers
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ScorevizError(f"scoreviz.integrations.transformers needs Hugging Face transformers ({err}): "
                        "pip install 'scoreviz[transformers]'") from None

# logs the callback records itself, every step, instead of at logging steps only
_LOGGED_PER_STEP = {"loss": "loss", "learning_rate": "lr"}


def in_batch_scores(rows: torch.Tensor, columns: torch.Tensor):
    """Cosine scores of row i with column i (positives, (n,)) and with every other
    column (in-batch negatives, (n, m - 1)): the in-batch layout, log_logits'
    positives="diagonal" (scoreviz.logits). `columns` may have more rows than
    `rows` (hard negatives appended). Computed without gradients."""
    with torch.no_grad():
        scores = F.normalize(rows.detach().float(), dim=-1) @ F.normalize(columns.detach().float(), dim=-1).T
        pos, neg, _ = split_logits(scores, "diagonal")
        return pos, neg


def scores_from_outputs(outputs):
    """(pos, neg) from a model's outputs: `pos` and `neg` fields, or two `*_embeds` fields of one shape."""
    fields = outputs if isinstance(outputs, dict) else getattr(outputs, "__dict__", {})
    if "pos" in fields and "neg" in fields:
        return fields["pos"].detach(), fields["neg"].detach()
    embeds = [(k, v) for k, v in fields.items()
              if k.endswith("_embeds") and isinstance(v, torch.Tensor) and v.dim() == 2]
    if len(embeds) == 2 and embeds[0][1].shape == embeds[1][1].shape:
        return in_batch_scores(embeds[0][1], embeds[1][1])
    found = sorted(k for k, v in fields.items() if v is not None)
    raise ScorevizError("ScorevizCallback: cannot find scores in the model's outputs (fields: "
                        f"{found}); it looks for 'pos' and 'neg', or two '*_embeds' fields of the same shape "
                        "(CLIP-style). Pass scores=lambda outputs: (pos, neg) with cosine scores.")


class ScorevizCallback(transformers.TrainerCallback):
    """Record a Trainer's contrastive scores, gradient norms, loss and learning rate.

    Args:
        run_dir: the run's folder (see scoreviz.Recorder).
        config: stored with the run; by default the TrainingArguments that differ
            from their defaults, and the model's class.
        scores: a function from the model's outputs to (pos, neg) cosine scores;
            by default `scores_from_outputs`.
        tag: the score tag of training.
        eval_tag: the score tag of evaluations.
        max_eval_batches: batches of one evaluation recorded (they are held
            until the evaluation ends).
        every: record training scores and gradients at every N-th step only;
            evaluations and scalars are always recorded.
        **recorder_options: bins, flush_secs, as for scoreviz.Recorder.
    """

    def __init__(self, run_dir, config=None, scores=None, tag: str = "train", eval_tag: str = "eval",
                 max_eval_batches: int = 64, every: int = 1, **recorder_options):
        # every option checked here, with the Recorder's rules: not at the first step or inside a hook
        where = type(self).__name__
        self.every = _positive(every, "every", where)
        self.max_eval_batches = _positive(max_eval_batches, "max_eval_batches", where)
        self.tag, self.eval_tag = (arguments.name(t, f"{where}: {n}") for t, n in ((tag, "tag"), (eval_tag, "eval_tag")))
        if scores is not None and not callable(scores):
            raise ScorevizError(f"{where}: scores must be a function from the model's outputs to (pos, neg), "
                                f"got {type(scores).__name__}")
        self.run_dir = run_dir
        self.config = config
        self.scores = scores or scores_from_outputs
        self.recorder_options = arguments.recorder_options(recorder_options, where, config)
        self.recorder = None
        self._trainer = None  # the Trainer whose training this callback records (see _loop_running)
        self._loop = None
        self._hook = None
        self._pending = defaultdict(list)  # tag -> [(pos, neg)] of the record being gathered
        self._pending_embeddings = defaultdict(list)  # tag -> [(z, z2)] of the record being gathered
        self._losses = []
        self._step = 0  # the number of the optimizer step under way

    # ------------------------------------------------------------ Trainer events

    def on_init_end(self, args, state, control, **kwargs):
        _guard(_trainer_on_stack())

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        trainer = _trainer_on_stack()
        _guard(trainer)  # for later calls, when added after the Trainer was built
        self._trainer = weakref.ref(trainer) if trainer is not None else None
        self._loop = type(trainer)._inner_training_loop.__code__ if trainer is not None else None
        _close_abandoned(self.run_dir)
        # torch.distributed is set up by now, so the Recorder knows its rank
        config = self.config if self.config is not None else self.default_config(args, model)
        self.recorder = Recorder(self.run_dir, config=config, **self.recorder_options)
        _RECORDING.add(self)
        self.attach(model)

    def on_step_begin(self, args, state, control, **kwargs):
        self._step = state.global_step + 1

    def on_pre_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
        step = state.global_step + 1  # the number this optimizer step will have
        if step % self.every == 0:
            self.recorder.log_gradients(step, model)
        if optimizer is not None and optimizer.param_groups:
            self.recorder.log_scalars(step, lr=float(optimizer.param_groups[0]["lr"]))

    def on_step_end(self, args, state, control, **kwargs):
        self._log_pending(self.tag, state.global_step)
        if self._losses:
            self.recorder.log_scalars(state.global_step, loss=torch.stack(self._losses).mean())
            self._losses = []

    def on_evaluate(self, args, state, control, **kwargs):
        if self.recorder is not None:
            self._log_pending(self.eval_tag, state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.recorder is None or not logs:
            return
        numbers = {k: float(v) for k, v in logs.items()
                   if k not in _LOGGED_PER_STEP and isinstance(v, (int, float)) and not isinstance(v, bool)}
        if numbers:
            self.recorder.log_scalars(state.global_step, **numbers)

    def on_train_end(self, args, state, control, **kwargs):
        self.close()

    def close(self):
        """Stop watching the model and flush the run. Idempotent."""
        self.detach()
        self._pending.clear()
        self._pending_embeddings.clear()
        self._losses = []
        _RECORDING.discard(self)
        if self.recorder is not None:
            recorder, self.recorder = self.recorder, None
            recorder.close()

    def abandon(self):
        """End the recording of a training that ended in an exception: as `close`, but an
        error of the Recorder's own (a full disk) is a warning, not one that hides the training's."""
        try:
            self.close()
        except ScorevizError as err:
            import warnings

            warnings.warn(f"{type(self).__name__}: closing the run after the training failed: {err}", RuntimeWarning)

    def recording(self) -> bool:
        """Whether a training is being recorded now: this callback's Recorder is open and its
        Trainer's training loop is running in this thread. A forward pass or loss outside
        it after an exception the callback was not told of (see the module's docstring)
        ends the recording."""
        if self.recorder is None:
            return False
        if self._loop is None or _loop_on_stack(sys._getframe(1), self._loop, self._trainer()):
            return True
        self.abandon()
        return False

    # ------------------------------------------------------------ where scores come from

    def attach(self, model):
        """Start watching where the scores come from: here, the model's forward outputs."""
        self._hook = model.register_forward_hook(self._on_forward)

    def detach(self):
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def _on_forward(self, module, inputs, outputs):
        if not self.recording():
            return
        training = module.training
        if training and isinstance(outputs, dict) and outputs.get("loss") is not None:
            self._losses.append(outputs["loss"].detach().float())
        if self.wants_scores(training):
            self.capture(training, *self.scores(outputs))

    def wants_scores(self, training: bool) -> bool:
        """Whether the batch now running is recorded (Recorder's `every`; the eval batch limit)."""
        if self.recorder is None:
            return False
        if training:
            return self._step % self.every == 0
        return len(self._pending[self.eval_tag]) < self.max_eval_batches

    def capture(self, training: bool, pos, neg, tag: str | None = None):
        """Hold one batch's scores until its record is complete (step end, evaluation end)."""
        tag = tag or (self.tag if training else self.eval_tag)
        self._pending[tag].append((pos.detach(), neg.detach()))

    def capture_embeddings(self, training: bool, z, z2=None):
        """Hold one batch's embeddings (two views optional) until its record is complete."""
        tag = self.tag if training else self.eval_tag
        self._pending_embeddings[tag].append((z.detach(), None if z2 is None else z2.detach()))

    def _log_pending(self, tag_prefix, step):
        batches = self._pending_embeddings.pop(tag_prefix, [])
        if batches:
            last_z, last_z2 = batches[-1]  # the batches that match the last one's dimension and views
            kept = [(z, z2) for z, z2 in batches
                    if z.shape[1:] == last_z.shape[1:] and (z2 is None) == (last_z2 is None)]
            z = torch.cat([z for z, _ in kept])
            z2 = None if last_z2 is None else torch.cat([z2 for _, z2 in kept])
            self.recorder.log_embeddings(step, z, z2, tag=tag_prefix)
        for tag in [t for t in self._pending if t == tag_prefix or t.startswith(tag_prefix + "-")]:
            batches = self._pending.pop(tag)
            if not batches:
                continue
            widths = Counter(neg.shape[1:] for _, neg in batches)
            width = max(widths, key=lambda w: (widths[w], w))  # the usual batch; a shorter last one is left out
            kept = [(p, n) for p, n in batches if n.shape[1:] == width]
            self.recorder.log_scores(step, torch.cat([p.reshape(-1) for p, _ in kept]),
                                     torch.cat([n for _, n in kept]), tag=tag)

    def default_config(self, args, model) -> dict:
        """The TrainingArguments of plain values (numbers, strings, lists of them) that
        differ from their defaults, and the model's class."""
        config = {}
        for f in dataclasses.fields(args):
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = None
            value = getattr(args, f.name, None)
            if (f.init and f.name not in ("output_dir", "logging_dir") and _plain(value) and value != default
                    and value not in (None, [], ())):
                config[f.name] = value
        if model is not None:
            config["model"] = type(model).__name__
        return config


_RECORDING = weakref.WeakSet()  # the callbacks of this process with a Recorder open


def _positive(value, what: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ScorevizError(f"{where}: {what} must be a positive integer, got {value!r}")
    return value


def _trainer_on_stack():
    """The Trainer whose method is calling the callback (its __init__ or train), or None."""
    frame = sys._getframe(2)
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, transformers.Trainer):
            return candidate
        frame = frame.f_back
    return None


def _guard(trainer):
    """Wrap `trainer.train` (on this instance): on an exception, its ScorevizCallbacks end
    their recording (hooks removed, Recorders closed), as on_train_end would."""
    if trainer is None or getattr(trainer.train, "_scoreviz_guard", False):
        return
    train = trainer.train

    @functools.wraps(train)
    def guarded(*args, **kwargs):
        try:
            return train(*args, **kwargs)
        except BaseException:
            for callback in trainer.callback_handler.callbacks:
                if isinstance(callback, ScorevizCallback):
                    callback.abandon()
            raise

    guarded._scoreviz_guard = True
    trainer.train = guarded


def _loop_on_stack(frame, loop, trainer) -> bool:
    """Whether `trainer`'s training loop (code object `loop`) is running in `frame` or below it."""
    while frame is not None:
        if frame.f_code is loop and frame.f_locals.get("self") is trainer:
            return True
        frame = frame.f_back
    return False


def _close_abandoned(run_dir):
    """End the recording of callbacks of this process on `run_dir` whose training loop runs
    in no thread any more (it ended in an exception they were not told of), so a new
    callback can open the run."""
    from pathlib import Path

    try:
        key = Path(run_dir).resolve()
    except (OSError, RuntimeError):
        return
    frames = list(sys._current_frames().values())
    for callback in list(_RECORDING):
        if callback.recorder is None or callback._loop is None or Path(callback.run_dir).resolve() != key:
            continue
        trainer = callback._trainer()
        if not any(_loop_on_stack(frame, callback._loop, trainer) for frame in frames):
            callback.abandon()


def _plain(value) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))
