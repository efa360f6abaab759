"""Images/s of the scoreviz MoCo training step against lightly's MoCo building blocks.

Both sides train the same backbone (scoreviz.trainer.model), with the same
2-layer MLP head, batch, queue size K, feature dim, temperature and momentum,
on the same pre-made input batches (augmentation is left out: lightly's is
torchvision's, which this benchmark does not need). One step = query forward,
momentum update, key forward, InfoNCE against the queue, backward, SGD step,
enqueue. Rounds alternate between the implementations so a busy machine slows
them alike; the table shows the median and the best round (the best is the
least disturbed by other processes, as timeit advises), and the ratio of bests.

    pip install --no-deps lightly     # for the benchmark only; never let it change torch
    python benchmarks/trainer_throughput.py [--device cpu|cuda] [--configs small resnet18]

lightly imports torchvision at module level for parts this benchmark does not
use; when torchvision is absent those imports get an empty stand-in module.
"""

import argparse
import copy
import importlib.abc
import importlib.machinery
import importlib.util
import statistics
import sys
import time
import types

import torch
import torch.nn as nn
import torch.nn.functional as F

from scoreviz.trainer.model import FT, MoCo, build_backbone

CONFIGS = {
    # name: (arch, channels, image size, batch, K)
    "small": ("small", 1, 8, 128, 1024),        # the digits default
    "resnet18": ("resnet18", 3, 32, 64, 4096),  # CIFAR shape, batch sized for a CPU
}


def _stub_torchvision():
    """Let ``import torchvision...`` succeed with empty modules (only when it is not installed)."""
    if importlib.util.find_spec("torchvision") is not None:
        return

    class Empty(types.ModuleType):
        __path__ = []

        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return type(name, (), {})

    class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path, target=None):
            if name == "torchvision" or name.startswith("torchvision."):
                return importlib.machinery.ModuleSpec(name, self, is_package=True)

        def create_module(self, spec):
            return Empty(spec.name)

        def exec_module(self, module):
            pass

    sys.meta_path.insert(0, Finder())


def ours(arch, channels, size, batch, K, device, ft):
    """A step function of the scoreviz trainer's MoCo model (FT on or off)."""
    model = MoCo(build_backbone(arch, channels, size), dim=128, K=K, m=0.99, T=0.2, mlp=True).to(device)
    opt = torch.optim.SGD(model.encoder_q.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4)
    labels = torch.zeros(batch, dtype=torch.long, device=device)
    ft = FT(2.0, 1.6) if ft else FT()

    def step(x1, x2):
        logits, _, _ = model(x1, x2, ft)
        loss = F.cross_entropy(logits, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    return step


def lightly_moco(arch, channels, size, batch, K, device):
    """The same step built from lightly's MoCo example parts: head, update_momentum, NTXentLoss with memory bank."""
    _stub_torchvision()
    from lightly.loss import NTXentLoss
    from lightly.models.modules import MoCoProjectionHead
    from lightly.models.utils import deactivate_requires_grad, update_momentum

    backbone = build_backbone(arch, channels, size)
    d = backbone.out_dim
    head = MoCoProjectionHead(d, d, 128)
    q = nn.Sequential(backbone, head).to(device)
    k = copy.deepcopy(q)
    deactivate_requires_grad(k)
    criterion = NTXentLoss(temperature=0.2, memory_bank_size=(K, 128)).to(device)
    opt = torch.optim.SGD(q.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4)

    def step(x1, x2):
        update_momentum(q, k, m=0.99)
        query = q(x1)
        with torch.no_grad():
            key = k(x2)
        loss = criterion(query, key)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    return step


def measure(step, batches, device):
    """Images/s of ``step`` over ``batches`` (query images counted, as in a training log)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for x1, x2 in batches:
        loss = step(x1, x2)
    loss.item()  # wait for the device
    return len(batches) * batches[0][0].shape[0] / (time.perf_counter() - start)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=5, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    try:
        import lightly
        lightly_version = lightly.__version__
    except ImportError:
        lightly_version = None

    print(f"torch {torch.__version__}, device {device}, {args.threads} threads, lightly {lightly_version or 'not installed'}")
    print(f"{'config':<40} {'implementation':<22} {'median img/s':>12} {'best img/s':>10}")
    for name in args.configs:
        arch, channels, size, batch, K = CONFIGS[name]
        torch.manual_seed(0)
        batches = [(torch.randn(batch, channels, size, size, device=device), torch.randn(batch, channels, size, size, device=device))
                   for _ in range(args.steps)]
        steps = {"scoreviz": ours(arch, channels, size, batch, K, device, ft=False),
                 "scoreviz + FT": ours(arch, channels, size, batch, K, device, ft=True)}
        if lightly_version:
            steps["lightly MoCo parts"] = lightly_moco(arch, channels, size, batch, K, device)
        for step in steps.values():  # warm-up: allocator, first-call overheads
            measure(step, batches[:2], device)
        rates = {k: [] for k in steps}
        for _ in range(args.rounds):
            for key, step in steps.items():
                rates[key].append(measure(step, batches, device))
        label = f"{name}: {arch} {size}x{size}, B {batch}, K {K}"
        for key, r in rates.items():
            print(f"{label:<40} {key:<22} {statistics.median(r):>12.0f} {max(r):>10.0f}")
        if lightly_version:
            ratio = max(rates["scoreviz"]) / max(rates["lightly MoCo parts"])
            print(f"{label:<40} {'scoreviz / lightly':<22} {'':>12} {ratio:>9.2f}x")


if __name__ == "__main__":
    main()
