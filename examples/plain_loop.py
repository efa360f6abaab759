"""The Recorder in a plain PyTorch SimCLR-style loop (in-batch negatives, InfoNCE),
with positive extrapolation from scoreviz.ft.

    python examples/plain_loop.py runs/plain
    scoreviz info runs/plain

The data are points around 10 random centres in 32 dimensions; two noisy views
of each point are the positive pair, the other points of the batch the negatives.
The lines that add scoreviz are marked; scores before the transformation go under
tag "raw", the ones the loss sees under tag "ft".
"""

import argparse

import torch
import torch.nn.functional as F

import scoreviz  # 1
from scoreviz.ft import positive_extrapolation


def views(points, noise=0.3):
    return points + noise * torch.randn_like(points), points + noise * torch.randn_like(points)


def main():
    parser = argparse.ArgumentParser(description="A plain contrastive loop with the Recorder and FT.")
    parser.add_argument("run_dir", nargs="?", default="runs/plain")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--pos-alpha", type=float, default=2.0, help="positive extrapolation (0: off)")
    args = parser.parse_args()

    torch.manual_seed(0)
    centres = torch.randn(10, 32)
    encoder = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 16))
    optimizer = torch.optim.SGD(encoder.parameters(), lr=0.1, momentum=0.9)
    off_diagonal = ~torch.eye(args.batch, dtype=torch.bool)

    with scoreviz.Recorder(args.run_dir, config=vars(args)) as rec:  # 2
        for step in range(args.steps):
            points = centres[torch.randint(10, (args.batch,))] + 0.5 * torch.randn(args.batch, 32)
            a, b = views(points)
            za, zb = F.normalize(encoder(a), dim=1), F.normalize(encoder(b), dim=1)
            raw = za @ zb.T                          # cosine scores, positives on the diagonal
            if args.pos_alpha:                       # harder positives: the pair pushed apart
                za_hat, zb_hat = positive_extrapolation(za, zb, args.pos_alpha)
                scores = raw.clone()
                scores[~off_diagonal] = (za_hat * zb_hat).sum(1)
            else:
                scores = raw
            loss = F.cross_entropy(scores / args.temperature, torch.arange(args.batch))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

            for tag, s in (("raw", raw), ("ft", scores)):
                rec.log_scores(step, s.diagonal().detach(), s[off_diagonal].view(args.batch, -1).detach(), tag=tag)  # 3
            rec.log_embeddings(step, za.detach(), zb.detach(), tag="raw")  # the representation: std, rank, ...
            rec.log_gradients(step, encoder)
            rec.log_scalars(step, loss=loss.detach(), lr=optimizer.param_groups[0]["lr"])
    print(f"recorded {args.steps} steps into {args.run_dir}")


if __name__ == "__main__":
    main()
