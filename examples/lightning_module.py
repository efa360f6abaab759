"""A LightningModule recorded by scoreviz's Lightning callback.

    pip install lightning
    python examples/lightning_module.py runs/lightning

`training_step` returns its in-batch logits, their layout ("diagonal") and the
temperature next to the loss, and the two views' embeddings; the callback does
the rest (scores, embedding std, uniformity, alignment and rank, gradient norms,
loss, learning rate).
"""

import argparse

import lightning
import torch
import torch.nn.functional as F

from scoreviz.integrations.lightning import ScorevizCallback


class ContrastiveModule(lightning.LightningModule):
    def __init__(self, temperature=0.1, lr=0.1):
        super().__init__()
        self.save_hyperparameters()
        self.encoder = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 16))

    def training_step(self, points, batch_idx):
        za = F.normalize(self.encoder(points + 0.3 * torch.randn_like(points)), dim=1)
        zb = F.normalize(self.encoder(points + 0.3 * torch.randn_like(points)), dim=1)
        logits = za @ zb.T / self.hparams.temperature  # in-batch negatives: the positive of row i is column i
        loss = F.cross_entropy(logits, torch.arange(len(points), device=points.device))
        return {"loss": loss, "logits": logits, "temperature": self.hparams.temperature, "positives": "diagonal",
                "z": za, "z2": zb}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)


def main():
    parser = argparse.ArgumentParser(description="A LightningModule recorded by ScorevizCallback.")
    parser.add_argument("run_dir", nargs="?", default="runs/lightning")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    centres = torch.randn(10, 32)
    points = centres[torch.randint(10, (2048,))] + 0.5 * torch.randn(2048, 32)
    loader = torch.utils.data.DataLoader(points, batch_size=128, shuffle=True)
    trainer = lightning.Trainer(max_epochs=args.epochs, accelerator="cpu", logger=False,
                                enable_checkpointing=False, enable_progress_bar=True,
                                callbacks=[ScorevizCallback(args.run_dir)])
    trainer.fit(ContrastiveModule(), loader)
    print(f"recorded {trainer.global_step} steps into {args.run_dir}")


if __name__ == "__main__":
    main()
