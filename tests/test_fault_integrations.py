"""Fault suite: the training frameworks' callbacks when the training fails, and bad options
(issue 25, failure 14).

An exception inside `Trainer.train()` tells no Hugging Face callback: the callback must
still remove its hook and close its Recorder, so the model works as before and a new
callback resumes the run. Options are checked when the callback is built, with the
Recorder's own rules, not at the first step or inside a forward hook.
"""

import pytest
import torch

from faults import report
from scoreviz import ScorevizError, open_run

transformers = pytest.importorskip("transformers")
from scoreviz.integrations.transformers import ScorevizCallback  # noqa: E402
from test_integrations_transformers import PairModel, Points, model_hooks  # noqa: E402

pytestmark = pytest.mark.slow


class Failing(PairModel):
    """PairModel whose training forward raises at its `fail_at`-th call (an OOM, a NaN check...)."""

    def __init__(self, fail_at):
        super().__init__()
        self.calls, self.fail_at = 0, fail_at

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == self.fail_at:
                raise RuntimeError("the training failed")
        return super().forward(x)


def trainer_args(tmp_path, steps):
    return transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=steps, per_device_train_batch_size=8, save_strategy="no",
        report_to="none", use_cpu=True, learning_rate=0.01, disable_tqdm=True, logging_steps=1)


@pytest.mark.parametrize("how", ["given to the Trainer", "added with add_callback"])
def test_hf_callback_cleans_up_after_an_exception_in_training(tmp_path, how):
    """Failure 14 (first half): after an exception in Trainer.train() the forward hook stayed and the
    Recorder stayed open: a later model(x) raised, and a new callback on the same run was refused."""
    torch.manual_seed(0)
    model = Failing(fail_at=4)
    callback = ScorevizCallback(tmp_path / "run", flush_secs=0.05)
    if how == "given to the Trainer":
        trainer = transformers.Trainer(model=model, args=trainer_args(tmp_path, 10), train_dataset=Points(200),
                                       callbacks=[callback])
    else:
        trainer = transformers.Trainer(model=model, args=trainer_args(tmp_path, 10), train_dataset=Points(200))
        trainer.add_callback(callback)
    with pytest.raises(RuntimeError, match="the training failed"):
        trainer.train()
    model.eval()
    with torch.no_grad():
        outputs = model(torch.randn(4, 8))  # the model works as before (a classifier's outputs would too)
    assert outputs["pos"].shape == (4,)
    assert model_hooks(model) == [] and callback.recorder is None  # hook removed, Recorder closed
    assert list(open_run(tmp_path / "run").scores("train").index) == [1, 2, 3]  # what was logged is kept
    resumed = ScorevizCallback(tmp_path / "run")
    model.fail_at = None
    transformers.Trainer(model=model, args=trainer_args(tmp_path, 2), train_dataset=Points(64),
                         callbacks=[resumed]).train()
    # the new training's steps 1 and 2 were appended (a step recorded twice reads as its later row)
    assert list(open_run(tmp_path / "run").scores("train").index) == [1, 2, 3]
    assert resumed.recorder is None and model_hooks(model) == []
    when = "as train() raised" if how == "given to the Trainer" else "at the model's next forward pass"
    report("hostile input", what=f"an exception inside Trainer.train(), the Hugging Face callback {how}",
           tried=1, result=f"hook removed and Recorder closed {when}; the 3 steps logged kept, model(x) works, "
                           "a new callback resumes the run (was: the hook left on, model(x) raised, the run refused)")


BAD_OPTIONS = {
    "max_eval_batches='x'": dict(max_eval_batches="x"),
    "max_eval_batches=0": dict(max_eval_batches=0),
    "tag=''": dict(tag=""),
    "eval_tag with NUL": dict(eval_tag="ev\x00al"),
    "tag of 300 bytes": dict(tag="t" * 300),
    "every=0": dict(every=0),
    "scores=5": dict(scores=5),
    "bins=0": dict(bins=0),
    "flush_secs='x'": dict(flush_secs="x"),
    "spectrum_window=-1": dict(spectrum_window=-1),
    "an unknown option": dict(bogus=1),
    "config not JSON-able at all": dict(config=[1, 2]),
}


def test_hf_callback_options_are_checked_when_built(tmp_path):
    """Failure 14 (second half): max_eval_batches='x' failed inside the forward hook, tag='' at the first step."""
    accepted = []
    for case, options in BAD_OPTIONS.items():
        try:
            ScorevizCallback(tmp_path / "run", **options)
            accepted.append(case)
        except ScorevizError as err:
            assert "ScorevizCallback: " in str(err), (case, str(err))
        assert not (tmp_path / "run").exists(), case
    assert accepted == [], f"accepted when built: {accepted}"
    report("hostile input", what="bad options given to the Hugging Face callback (" + ", ".join(BAD_OPTIONS) + ")",
           tried=len(BAD_OPTIONS), result="a ScorevizError naming the option when the callback is built, nothing "
                                          "created (was: max_eval_batches='x' failed inside the forward hook, tag='' "
                                          "at the first step)")


# ---- sentence-transformers: its hook is the loss's compute_loss_from_embeddings ----------------


def test_sentence_transformers_callback_cleans_up_and_checks_options(tmp_path):
    pytest.importorskip("sentence_transformers")
    from scoreviz.integrations.sentence_transformers import ScorevizCallback as STCallback
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    class Embedder(Failing):
        """A model computing its loss through a MultipleNegativesRankingLoss, as the ST trainer does."""

        def forward(self, x):
            out = super().forward(x)
            za, zb = self.encoder(x), self.encoder(x + 0.1)
            out["loss"] = self.mnrl.compute_loss_from_embeddings([za, zb], None)
            return out

    model = Embedder(fail_at=3)
    loss = model.__dict__["mnrl"] = MultipleNegativesRankingLoss(model)  # not a submodule: it holds the model
    for options in (dict(tag=""), dict(tag="t" * 252), dict(max_eval_batches="x"), dict(bins=10 ** 9)):
        with pytest.raises(ScorevizError, match="ScorevizCallback"):
            STCallback(tmp_path / "run", loss, **options)
    callback = STCallback(tmp_path / "run", loss, flush_secs=0.05)
    trainer = transformers.Trainer(model=model, args=trainer_args(tmp_path, 10), train_dataset=Points(200),
                                   callbacks=[callback])
    with pytest.raises(RuntimeError, match="the training failed"):
        trainer.train()
    assert "compute_loss_from_embeddings" not in loss.__dict__ and callback.recorder is None
    assert list(open_run(tmp_path / "run").scores("train").index) == [1, 2]
    model.fail_at = None
    resumed = STCallback(tmp_path / "run", loss)
    transformers.Trainer(model=model, args=trainer_args(tmp_path, 1), train_dataset=Points(64),
                         callbacks=[resumed]).train()
    assert "compute_loss_from_embeddings" not in loss.__dict__ and resumed.recorder is None
    report("hostile input", what="an exception in training and bad options (tag='', a tag of 252 bytes whose "
           "'-hard' tag would not fit, max_eval_batches='x', bins=10**9), the sentence-transformers callback",
           tried=5, result="the loss unpatched and the Recorder closed as train() raised, the steps logged kept, "
                           "a new callback resumes the run; each bad option a ScorevizError when built")


# ---- Lightning ------------------------------------------------------------------------


def test_lightning_callback_cleans_up_and_checks_options(tmp_path):
    lightning = pytest.importorskip("lightning")
    from scoreviz.integrations.lightning import ScorevizCallback as LightningCallback

    for options in (dict(bins=0), dict(flush_secs="x"), dict(bogus=1), dict(config=[1])):
        with pytest.raises(ScorevizError, match="ScorevizCallback|config"):
            LightningCallback(tmp_path / "run", **options)

    class Module(lightning.LightningModule):
        def __init__(self, fail_at):
            super().__init__()
            self.encoder, self.fail_at = torch.nn.Linear(8, 4), fail_at

        def training_step(self, batch, index):
            if index + 1 == self.fail_at:
                raise RuntimeError("the training failed")
            z = torch.nn.functional.normalize(self.encoder(batch["x"]), dim=1)
            scores = (z @ z.detach().T).clamp(-1, 1)
            off = ~torch.eye(len(z), dtype=torch.bool)
            return {"loss": -scores.diagonal().mean(), "pos": scores.diagonal(), "neg": scores[off].view(len(z), -1)}

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    def fit(module, callback, steps):
        trainer = lightning.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                                    enable_progress_bar=False, enable_model_summary=False, callbacks=[callback],
                                    default_root_dir=str(tmp_path))
        trainer.fit(module, torch.utils.data.DataLoader(Points(200), batch_size=8))

    callback = LightningCallback(tmp_path / "run", flush_secs=0.05)
    with pytest.raises(RuntimeError, match="the training failed"):
        fit(Module(fail_at=4), callback, 10)
    assert callback.recorder is None
    assert list(open_run(tmp_path / "run").scores("train").index) == [0, 1, 2]
    resumed = LightningCallback(tmp_path / "run")
    fit(Module(fail_at=None), resumed, 2)
    assert resumed.recorder is None and len(open_run(tmp_path / "run").scores("train")) >= 3
    report("hostile input", what="an exception in training and bad options (bins=0, flush_secs='x', an unknown "
           "option, a config that is a list), the Lightning callback", tried=5,
           result="the Recorder closed by on_exception, the steps logged kept, a new callback resumes the run; "
                  "each bad option a ScorevizError when built (was: when fit() started)")
