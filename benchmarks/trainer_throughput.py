"""Images/s of the scoreviz MoCo training step against lightly's MoCo building blocks.

Both sides train the same backbone (scoreviz.trainer.model), with the same
2-layer MLP head, batch, queue size K, feature dim, temperature and momentum,
on the same pre-made input batches (augmentation is left out: lightly's is
torchvision's, which this benchmark does not need). One step = query forward,
momentum update, key forward, InfoNCE against the queue, backward, SGD step,
enqueue. Ours runs as the trainer does on one device: shuffle-BN with 8 BN
groups (also timed with plain BN, lightly's way, and with FT); on CUDA every
step runs under bf16 autocast with channels_last, lightly's too. Rounds
alternate between the implementations so a busy machine slows them alike; the
markdown table shows the median and the best round (the best is the least
disturbed by other processes, as timeit advises), and the ratio of bests.

    pip install --no-deps lightly     # for the benchmark only; never let it change torch
    python benchmarks/trainer_throughput.py                                    # CPU sizes
    python benchmarks/trainer_throughput.py --device cuda --configs cifar imagenet

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
    "tiny": ("small", 1, 8, 16, 64),                # a smoke test (benchmarks/gpu_check.sh --device cpu)
    "small": ("small", 1, 8, 128, 1024),            # the digits default
    "resnet18": ("resnet18", 3, 32, 64, 4096),      # CIFAR shape, batch sized for a CPU
    "cifar": ("resnet18", 3, 32, 512, 4096),        # MoCo's CIFAR demo, for a GPU
    "imagenet": ("resnet50", 3, 224, 256, 65536),   # the paper's ImageNet-100 step, for a GPU
}
CPU_CONFIGS = ["small", "resnet18"]


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


def _autocast(device):
    """bf16 autocast on CUDA, as the trainer runs; nothing on the CPU."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def _memory_format(device):
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def ours(arch, channels, size, batch, K, device, ft, bn_splits=8):
    """A step function of the scoreviz trainer's MoCo model (FT on or off, BN split into groups or not)."""
    model = MoCo(build_backbone(arch, channels, size, bn_splits), dim=128, K=K, m=0.99, T=0.2, mlp=True)
    model = model.to(device, memory_format=_memory_format(device))
    opt = torch.optim.SGD(model.encoder_q.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4)
    labels = torch.zeros(batch, dtype=torch.long, device=device)
    ft = FT(2.0, 1.6) if ft else FT()

    def step(x1, x2):
        with _autocast(device):
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
    q = nn.Sequential(backbone, head).to(device, memory_format=_memory_format(device))
    k = copy.deepcopy(q)
    deactivate_requires_grad(k)
    criterion = NTXentLoss(temperature=0.2, memory_bank_size=(K, 128)).to(device)
    opt = torch.optim.SGD(q.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4)

    def step(x1, x2):
        update_momentum(q, k, m=0.99)
        with _autocast(device):
            query = q(x1)
            with torch.no_grad():
                key = k(x2)
        loss = criterion(query.float(), key.float())
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
    p.add_argument("--configs", nargs="+", choices=list(CONFIGS),
                   help=f"default: {' '.join(CPU_CONFIGS)} (CPU sizes); cifar and imagenet are GPU sizes")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=5, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    try:
        import lightly
        lightly_version = lightly.__version__
    except ImportError:
        lightly_version = None

    precision = ", bf16 autocast, channels_last" if device.type == "cuda" else ""
    print(f"torch {torch.__version__}, {where}{precision}, lightly {lightly_version or 'not installed'}\n")
    print("| config | implementation | median img/s | best img/s |")
    print("|---|---|---:|---:|")
    for name in args.configs or CPU_CONFIGS:
        arch, channels, size, batch, K = CONFIGS[name]
        torch.manual_seed(0)

        def images():
            return torch.randn(batch, channels, size, size, device=device).contiguous(memory_format=_memory_format(device))

        batches = [(images(), images()) for _ in range(args.steps)]
        steps = {"scoreviz (8 BN groups)": ours(arch, channels, size, batch, K, device, ft=False),
                 "scoreviz, plain BN": ours(arch, channels, size, batch, K, device, ft=False, bn_splits=1),
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
            print(f"| {label} | {key} | {statistics.median(r):,.0f} | {max(r):,.0f} |")
        if lightly_version:
            ratio = max(rates["scoreviz, plain BN"]) / max(rates["lightly MoCo parts"])
            print(f"| {label} | scoreviz, plain BN / lightly (best rounds) | | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
