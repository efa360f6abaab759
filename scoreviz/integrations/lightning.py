"""A PyTorch Lightning callback that feeds a LightningModule's scores to the Recorder.

    from scoreviz.integrations.lightning import ScorevizCallback
    trainer = lightning.Trainer(callbacks=[ScorevizCallback("runs/my-run")])

`training_step` returns a dict with the loss and either logits (`"logits"` and
`"temperature"`, and `"positives"` unless they are MoCo's (B, 1 + K) with the
positive in column 0: "diagonal" for in-batch (B, B) logits, "ntxent", or a bool
mask with `"ignore"`, as for `Recorder.log_logits`) or cosine scores (`"pos"`,
and `"neg"` where the method has negatives), and/or embeddings (`"z"`, with
`"z2"` for a second view); optionally `"tag"`. The callback records them, the gradient norms before
each optimizer step, the loss and the learning rate, at Lightning's global step.
Under a distributed strategy every rank records and rank 0 writes.
"""

from __future__ import annotations

import lightning

from scoreviz import arguments
from scoreviz.errors import ScorevizError
from scoreviz.recorder import Recorder


class ScorevizCallback(lightning.Callback):
    """Record a LightningModule's scores, gradient norms, loss and learning rate.

    Args: as for `scoreviz.Recorder` (run_dir, config, every, bins, flush_secs);
    `config` defaults to the module's hyperparameters.
    """

    def __init__(self, run_dir, config=None, **recorder_options):
        # checked here with the Recorder's rules, not when fit() starts
        self.run_dir = run_dir
        self.config = config
        self.recorder_options = arguments.recorder_options(recorder_options, "lightning.ScorevizCallback", config)
        self.recorder = None

    def on_fit_start(self, trainer, pl_module):
        # here torch.distributed is already set up, so the Recorder knows its rank
        config = self.config if self.config is not None else dict(pl_module.hparams)
        self.recorder = Recorder(self.run_dir, config=config, **self.recorder_options)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.recorder.log_gradients(trainer.global_step, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not isinstance(outputs, dict):
            raise ScorevizError("ScorevizCallback: training_step must return a dict with 'loss' and "
                                "'logits' + 'temperature' or 'pos' + 'neg'")
        step = max(trainer.global_step - 1, 0)  # the optimizer step this batch made
        tag = outputs.get("tag", "train")
        if "logits" in outputs:
            self.recorder.log_logits(step, _detached(outputs["logits"]), float(outputs["temperature"]), tag=tag,
                                     positives=outputs.get("positives"), ignore=outputs.get("ignore"))
        elif "pos" in outputs:
            self.recorder.log_scores(step, _detached(outputs["pos"]), _detached(outputs.get("neg")), tag=tag)
        elif "z" not in outputs:
            raise ScorevizError("ScorevizCallback: training_step's dict needs 'logits' and 'temperature', "
                                f"or 'pos' (and 'neg'), or embeddings 'z' (and 'z2'); it has {sorted(outputs)}")
        if "z" in outputs:
            self.recorder.log_embeddings(step, _detached(outputs["z"]), _detached(outputs.get("z2")), tag=tag)
        scalars = {"loss": outputs["loss"].detach()}
        if trainer.optimizers:
            scalars["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        self.recorder.log_scalars(step, **scalars)

    def on_fit_end(self, trainer, pl_module):
        self.close()

    def on_exception(self, trainer, pl_module, exception):
        # the run is flushed and released, so a new callback resumes it; an error of the
        # Recorder's own (a full disk) must not hide the training's
        try:
            self.close()
        except ScorevizError as err:
            import warnings

            warnings.warn(f"lightning.ScorevizCallback: closing the run after the training failed: {err}",
                          RuntimeWarning)

    def close(self):
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None


def _detached(x):
    return x.detach() if hasattr(x, "detach") else x
