"""A MoCo loop written by hand (momentum key encoder, a queue of negatives) with
feature transformation from scoreviz.ft and the Recorder: scores before FT under
tag "raw", after FT under tag "ft".

    python examples/moco_loop.py runs/moco-by-hand
"""

import argparse
import copy

import torch
import torch.nn.functional as F

import scoreviz
from scoreviz.ft import negative_interpolation, positive_extrapolation


def main():
    parser = argparse.ArgumentParser(description="A hand-written MoCo loop with FT and the Recorder.")
    parser.add_argument("run_dir", nargs="?", default="runs/moco-by-hand")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--queue", type=int, default=1024)
    parser.add_argument("--m", type=float, default=0.99, help="key encoder momentum")
    parser.add_argument("--t", type=float, default=0.2, help="temperature")
    parser.add_argument("--pos-alpha", type=float, default=2.0)
    parser.add_argument("--neg-alpha", type=float, default=1.6)
    args = parser.parse_args()

    torch.manual_seed(0)
    centres = torch.randn(10, 32)
    encoder_q = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 16))
    encoder_k = copy.deepcopy(encoder_q).requires_grad_(False)
    queue = F.normalize(torch.randn(args.queue, 16), dim=1)
    optimizer = torch.optim.SGD(encoder_q.parameters(), lr=0.05, momentum=0.9)

    with scoreviz.Recorder(args.run_dir, config=vars(args)) as rec:
        for step in range(args.steps):
            points = centres[torch.randint(10, (args.batch,))] + 0.5 * torch.randn(args.batch, 32)
            q = F.normalize(encoder_q(points + 0.3 * torch.randn_like(points)), dim=1)
            with torch.no_grad():
                for pk, pq in zip(encoder_k.parameters(), encoder_q.parameters()):
                    pk.mul_(args.m).add_(pq, alpha=1 - args.m)
                k = F.normalize(encoder_k(points + 0.3 * torch.randn_like(points)), dim=1)

            raw = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], dim=1) / args.t
            q_hat, k_hat = positive_extrapolation(q, k, args.pos_alpha)        # harder positives
            negatives = negative_interpolation(queue, args.neg_alpha)          # more diverse negatives
            logits = torch.cat([(q_hat * k_hat).sum(1, keepdim=True), q_hat @ negatives.T], dim=1) / args.t
            loss = F.cross_entropy(logits, torch.zeros(args.batch, dtype=torch.long))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            queue = torch.cat([k, queue[:-args.batch]])                         # enqueue the un-mixed keys

            rec.log_logits(step, raw.detach(), args.t, tag="raw")
            rec.log_logits(step, logits.detach(), args.t, tag="ft")
            rec.log_embeddings(step, q.detach(), k, tag="raw")                  # std, uniformity, alignment, rank
            rec.log_gradients(step, encoder_q)
            rec.log_scalars(step, loss=loss.detach())
    print(f"recorded {args.steps} steps into {args.run_dir}")


if __name__ == "__main__":
    main()
