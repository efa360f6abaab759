"""The Recorder under torchrun: every rank logs its own scores and embeddings, the
statistics cover the global batch, and rank 0 alone writes the file.

    torchrun --nproc_per_node 2 examples/ddp.py runs/ddp
"""

import argparse

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

import scoreviz


def main():
    parser = argparse.ArgumentParser(description="DistributedDataParallel with the Recorder (run with torchrun).")
    parser.add_argument("run_dir", nargs="?", default="runs/ddp")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64, help="per rank")
    args = parser.parse_args()

    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank()
    device = torch.device("cuda", rank % torch.cuda.device_count()) if torch.cuda.is_available() else torch.device("cpu")
    torch.manual_seed(0)  # the same data centres and initial weights on every rank
    centres = torch.randn(10, 32, device=device)
    model = DistributedDataParallel(torch.nn.Sequential(
        torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 16)).to(device))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    torch.manual_seed(1 + rank)  # each rank draws its own batches

    with scoreviz.Recorder(args.run_dir, config=vars(args)) as rec:  # on every rank: only rank 0 writes
        for step in range(args.steps):
            points = centres[torch.randint(10, (args.batch,), device=device)]
            points = points + 0.5 * torch.randn_like(points)
            za = F.normalize(model(points + 0.3 * torch.randn_like(points)), dim=1)
            zb = F.normalize(model(points + 0.3 * torch.randn_like(points)), dim=1)
            scores = za @ zb.T
            loss = F.cross_entropy(scores / 0.1, torch.arange(args.batch, device=device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

            negatives = scores[~torch.eye(args.batch, dtype=torch.bool, device=device)].view(args.batch, -1)
            rec.log_scores(step, scores.diagonal().detach(), negatives.detach())  # a collective: every rank calls it
            rec.log_embeddings(step, za.detach(), zb.detach())  # uniformity over the pairs of the global batch
            rec.log_gradients(step, model)
            rec.log_scalars(step, loss=loss.detach())
    if rank == 0:
        print(f"recorded {args.steps} steps of {dist.get_world_size()} ranks into {args.run_dir}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
