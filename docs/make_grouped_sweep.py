"""A small synthetic sweep for the grouped views' screenshots: 3 values of moco_m x 3 seeds.

    python docs/make_grouped_sweep.py /tmp/sweep          # then docs/make_screenshot.py on it

Written with the real scoreviz.Recorder from drawn cosine scores (no training): per step,
positives ~ N(mu_pos, 0.08) and negatives ~ N(mu_neg, sd_neg) clipped to [-1, 1], where a
smaller momentum pulls positives up faster and lets negatives spread more; each seed adds
its own offset, spread and noise, so groups differ and seeds within a group do too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import scoreviz  # noqa: E402

MOMENTA = (0.9, 0.99, 0.999)
SEEDS = (0, 1, 2)


def write_sweep(out: Path, steps: int = 300, batch: int = 128, queue: int = 512) -> None:
    for m in MOMENTA:
        speed = {0.9: 3.0, 0.99: 1.6, 0.999: 0.8}[m]  # how fast positives align
        for seed in SEEDS:
            gen = torch.Generator().manual_seed(seed * 1000 + int(m * 1000))
            offset = 0.04 * (seed - 1)
            with scoreviz.Recorder(out / f"m{m}-s{seed}", config={"moco_m": m, "seed": seed, "lr": 0.03}) as rec:
                for step in range(steps):
                    t = step / steps
                    mu_pos = 0.2 + 0.65 * (1 - torch.exp(torch.tensor(-speed * t))).item() + offset
                    mu_neg = 0.05 + 0.1 * t * (1 - m) * 10 + offset / 2
                    sd_neg = (0.08 + 0.12 * t * speed / 3) * (1 + 0.15 * (seed - 1))
                    pos = (mu_pos + 0.08 * torch.randn(batch, generator=gen)).clamp(-1, 1)
                    neg = (mu_neg + sd_neg * torch.randn(batch, queue, generator=gen)).clamp(-1, 1)
                    rec.log_scores(step, pos, neg)
                    rec.log_scalars(step, loss=float(6.0 - 4 * mu_pos + 2 * sd_neg))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder to write the sweep's runs into")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args(argv)
    write_sweep(Path(args.out), args.steps)
    print(f"wrote {len(MOMENTA) * len(SEEDS)} runs under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
