"""Record the in-batch scores of sentence-transformers' MultipleNegativesRankingLoss.

    from scoreviz.integrations.sentence_transformers import ScorevizCallback
    loss = MultipleNegativesRankingLoss(model)
    trainer = SentenceTransformerTrainer(model=model, train_dataset=pairs, loss=loss,
                                         callbacks=[ScorevizCallback("runs/st", loss)])

The callback watches the loss: every time it computes its value from the
embeddings of a batch of (anchor, positive[, negative ...]) rows, it scores them
in the in-batch layout (log_logits' positives="diagonal", on the (batch, batch x
columns) similarity matrix): the cosine scores of each anchor with its own
positive (the diagonal) are the positives, and its scores with every other
candidate the loss sees (the other rows' positives and every row's hard
negatives) are the negatives: tag "train" (and "eval" during evaluation). With hard negatives in
the data, tags "train-hard" and "eval-hard" hold each anchor's scores with its own hard
negatives only. The scores are cosine similarities, whatever similarity
function the loss uses. Under torch.distributed each process scores its own
batch (with gather_across_devices the loss also sees other processes'
candidates; those scores are not recorded) and the statistics add up over
processes. Everything else (gradient norms, loss, learning rate, the Trainer's
logs, step numbers) is as for `scoreviz.integrations.transformers.ScorevizCallback`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from scoreviz import arguments
from scoreviz.errors import ScorevizError
from scoreviz.integrations import transformers as hf

try:
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
except ImportError:
    try:
        from sentence_transformers.losses import MultipleNegativesRankingLoss
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ScorevizError(f"scoreviz.integrations.sentence_transformers needs sentence-transformers ({err}): "
                            "pip install 'scoreviz[sentence-transformers]'") from None


class ScorevizCallback(hf.ScorevizCallback):
    """Record a MultipleNegativesRankingLoss's in-batch scores during SentenceTransformerTrainer.train().

    Args:
        run_dir: the run's folder.
        loss: the MultipleNegativesRankingLoss (or a subclass) given to the trainer.
        config: stored with the run; by default the non-default training
            arguments, the model's class and the loss's own settings.
        **options: tag, eval_tag, max_eval_batches, every, bins, flush_secs
            (see scoreviz.integrations.transformers.ScorevizCallback).
    """

    def __init__(self, run_dir, loss, config=None, **options):
        if not isinstance(loss, MultipleNegativesRankingLoss):
            raise ScorevizError("sentence_transformers.ScorevizCallback: loss must be a MultipleNegativesRankingLoss "
                                f"(whose similarity matrix has the positives on its diagonal), got {type(loss).__name__}")
        if not hasattr(loss, "compute_loss_from_embeddings"):
            raise ScorevizError("sentence_transformers.ScorevizCallback: this sentence-transformers' "
                                "MultipleNegativesRankingLoss has no compute_loss_from_embeddings; "
                                "pip install 'scoreviz[sentence-transformers]' for a recent one")
        super().__init__(run_dir, config=config, **options)
        for tag in (self.tag, self.eval_tag):  # the tags of each anchor's own hard negatives must fit too
            arguments.name(f"{tag}-hard", "sentence_transformers.ScorevizCallback: tag + '-hard'")
        self.loss = loss

    def default_config(self, args, model) -> dict:
        config = super().default_config(args, model)
        config["loss"] = type(self.loss).__name__
        config.update({f"loss.{k}": v for k, v in self.loss.get_config_dict().items()})
        return config

    def attach(self, model):
        compute = self.loss.compute_loss_from_embeddings

        def recorded(embeddings, labels, *args, **kwargs):
            value = compute(embeddings, labels, *args, **kwargs)
            self._on_loss(embeddings, value)
            return value

        self.loss.compute_loss_from_embeddings = recorded  # shadows the method on this instance only

    def detach(self):
        self.loss.__dict__.pop("compute_loss_from_embeddings", None)

    def _on_loss(self, embeddings, value):
        if not self.recording():
            return
        training = self.loss.model.training
        if training:
            self._losses.append(value.detach().float())
        if not self.wants_scores(training):
            return
        anchors, candidates = embeddings[0], torch.cat(list(embeddings[1:]), dim=0)
        self.capture_embeddings(training, anchors, embeddings[1] if len(embeddings) > 1 else None)
        pos, neg = hf.in_batch_scores(anchors, candidates)
        self.capture(training, pos, neg)
        if len(embeddings) > 2:  # each anchor against its own hard negatives
            with torch.no_grad():
                own = torch.stack([F.cosine_similarity(anchors.detach().float(), e.detach().float(), dim=-1)
                                   for e in embeddings[2:]], dim=1)
            self.capture(training, pos, own, tag=f"{self.tag if training else self.eval_tag}-hard")
