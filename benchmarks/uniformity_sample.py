"""What uniformity from a sample costs and how far it lands from uniformity over all pairs.

    python benchmarks/uniformity_sample.py [--batches 8192 20000] [--dim 16]

Batches above scoreviz.embeddings.UNIFORMITY_SAMPLES (4,096) samples take uniformity over the
pairs of every k-th sample (k = ceil(batch / 4096)). For a few kinds of embeddings this prints
the recorded uniformity, the one over all pairs (numpy, float64, in blocks), their difference,
and the time of one log_embeddings call on the training thread (CPU, spectrum off).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from scoreviz import Recorder, open_run
from scoreviz.embeddings import UNIFORMITY_SAMPLES


def kinds(batch, dim, generator):
    """name -> embeddings (batch, dim): spread out, in clusters, nearly collapsed, sorted by cluster."""
    spread = torch.randn(batch, dim, generator=generator)
    centres = torch.randn(10, dim, generator=generator)
    labels = torch.randint(0, 10, (batch,), generator=generator)
    clusters = centres[labels] + 0.3 * torch.randn(batch, dim, generator=generator)
    narrow = torch.randn(dim, generator=generator) + 0.05 * torch.randn(batch, dim, generator=generator)
    return {"isotropic": spread, "10 clusters": clusters, "nearly one point": narrow,
            "10 clusters, sorted": clusters[labels.argsort()]}


def all_pairs(z, t=2.0, block=2048):
    x = z.double().numpy()
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    total, n = 0.0, len(x)
    for start in range(0, n, block):
        d2 = np.clip(2.0 - 2.0 * x[start:start + block] @ x.T, 0.0, None)
        e = np.exp(-t * d2)
        e[np.arange(len(e)), np.arange(start, start + len(e))] = 0.0  # i == j
        total += e.sum()
    return float(np.log(total / (n * (n - 1))))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[8192, 20000])
    parser.add_argument("--dim", type=int, default=16)
    args = parser.parse_args()
    print(f"UNIFORMITY_SAMPLES = {UNIFORMITY_SAMPLES}\n")
    print("| embeddings | batch x dim | recorded (sample) | all pairs | difference | log_embeddings call (ms) |")
    print("|---|---|---:|---:|---:|---:|")
    generator = torch.Generator().manual_seed(0)
    for batch in args.batches:
        for name, z in kinds(batch, args.dim, generator).items():
            with tempfile.TemporaryDirectory() as tmp, Recorder(tmp, spectrum_window=0) as rec:
                rec.log_embeddings(0, z)  # warm
                start = time.perf_counter()
                rec.log_embeddings(1, z)
                took = time.perf_counter() - start
                rec.flush()
                recorded = float(open_run(tmp).embeddings().loc[1, "uniformity"])
            exact = all_pairs(z)
            print(f"| {name} | {batch:,} x {args.dim} | {recorded:.4f} | {exact:.4f} | {recorded - exact:+.4f} | "
                  f"{took * 1e3:.0f} |")


if __name__ == "__main__":
    main()
