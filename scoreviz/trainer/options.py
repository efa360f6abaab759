"""The trainer's command-line options and their defaults, without torch.

``scoreviz train --help`` and ``scoreviz lincls --help`` build their parsers from
this module alone, so they answer at once; train.py and lincls.py import torch.
"""

import argparse

# The paper's settings per MoCo version (the rest of v1 is v2's, as in the authors' code).
VERSION_DEFAULTS = {
    1: dict(mlp=False, moco_t=0.07, cos=False),
    2: dict(mlp=True, moco_t=0.2, cos=True),
}
# Sizes per dataset: ImageNet-100 as in the paper, CIFAR as in MoCo's CIFAR
# demo, digits sized to train on a laptop CPU in a few minutes.
DATASET_DEFAULTS = {
    "imagefolder": dict(arch="resnet50", batch_size=256, lr=0.03, wd=1e-4, moco_k=65536, moco_m=0.99, epochs=200, crop_min=0.2, flip=True),
    "cifar10": dict(arch="resnet18", batch_size=512, lr=0.06, wd=5e-4, moco_k=4096, moco_m=0.99, epochs=200, crop_min=0.2, flip=True),
    "cifar100": dict(arch="resnet18", batch_size=512, lr=0.06, wd=5e-4, moco_k=4096, moco_m=0.99, epochs=200, crop_min=0.2, flip=True),
    # Digits are not mirror-symmetric and only 8 px wide: no flip, milder crops.
    "digits": dict(arch="small", batch_size=128, lr=0.06, wd=5e-4, moco_k=1024, moco_m=0.99, epochs=100, crop_min=0.5, flip=False),
}


def per_dataset(key: str) -> str:
    """'default: digits 100; cifar10, cifar100, imagefolder 200': a setting's default for each dataset."""
    groups = {}
    for dataset in sorted(DATASET_DEFAULTS):
        value = DATASET_DEFAULTS[dataset][key]
        groups.setdefault("on" if value is True else "off" if value is False else f"{value:g}"
                          if isinstance(value, float) else str(value), []).append(dataset)
    return "default: " + "; ".join(f"{', '.join(names)} {value}" for value, names in groups.items())


def per_version(key: str) -> str:
    """'default: v1 0.07, v2 0.2': a setting's default for each MoCo version."""
    def fmt(value):
        return "on" if value is True else "off" if value is False else f"{value:g}"
    return "default: " + ", ".join(f"v{v} {fmt(table[key])}" for v, table in VERSION_DEFAULTS.items())


def add_arguments(parser):
    """Add the training options to an argparse parser (used by ``scoreviz train``)."""
    a = parser.add_argument
    a("--dataset", default="digits", choices=sorted(DATASET_DEFAULTS), help="training data (default: digits, bundled)")
    a("--data", metavar="PATH", help="local folder of the dataset (cifar10, cifar100, imagefolder)")
    a("--run-dir", metavar="PATH", help="where the record, checkpoints and results go (default: a new folder under runs/)")
    a("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint, with its saved settings (only --epochs may change)")
    a("--moco-version", type=int, default=2, choices=[1, 2], help="MoCo v1 (linear head, t 0.07) or v2 (MLP head, t 0.2, cosine lr)")
    a("--arch", choices=["small", "resnet18", "resnet50"], help=f"backbone ({per_dataset('arch')})")
    a("--image-size", type=int, help="crop size for imagefolder (default 224)")
    a("--epochs", type=int, help=f"epochs to train ({per_dataset('epochs')})")
    a("--batch-size", type=int, help=f"total batch over all processes ({per_dataset('batch_size')})")
    a("--lr", type=float, help=f"base learning rate ({per_dataset('lr')})")
    a("--momentum", type=float, default=0.9, help="SGD momentum")
    a("--wd", type=float, help=f"weight decay ({per_dataset('wd')})")
    a("--schedule", type=int, nargs="*", help="v1 step schedule: epochs where lr drops 10x (default 60%% and 80%% of epochs)")
    a("--cos", action=argparse.BooleanOptionalAction, default=None, help=f"cosine lr schedule ({per_version('cos')})")
    a("--moco-dim", type=int, default=128, help="feature dimension")
    a("--moco-k", type=int, help=f"queue size K ({per_dataset('moco_k')})")
    a("--moco-m", type=float, help=f"momentum of the key encoder ({per_dataset('moco_m')})")
    a("--moco-t", type=float, help=f"softmax temperature ({per_version('moco_t')})")
    a("--crop-min", type=float, help=f"smallest area fraction of RandomResizedCrop ({per_dataset('crop_min')})")
    a("--flip", action=argparse.BooleanOptionalAction, default=None, help=f"random horizontal flip ({per_dataset('flip')})")
    a("--pos-alpha", type=float, help="positive extrapolation, lambda = 1 + Beta(a, a) (default: off; paper: 2.0)")
    a("--neg-alpha", type=float, help="negative interpolation, lambda = Beta(a, a) (default: off; paper: 1.6)")
    a("--per-dim", default="none", choices=["none", "pos", "neg", "both"], help="which transformation draws one lambda per dimension")
    a("--ft-start-epoch", type=int, default=0, help="first epoch with feature transformation")
    a("--steps-per-epoch", type=int, help="stop each epoch after this many steps (quick checks; default: whole epochs)")
    a("--knn-k", type=int, default=200, help="neighbours of the kNN monitor")
    a("--knn-t", type=float, default=0.1, help="temperature of the kNN monitor's vote")
    a("--record-every", type=int, default=1, help="Recorder: record every N steps")
    a("--workers", type=int, default=4, help="DataLoader workers (imagefolder)")
    a("--seed", type=int, default=0, help="seed of the model, the augmentations and the data order")
    a("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    a("--quiet", action="store_true", help="no progress bar")
    return parser


def add_lincls_arguments(parser):
    """Add the linear-evaluation options to an argparse parser (used by ``scoreviz lincls``)."""
    a = parser.add_argument
    a("run_dir", metavar="RUN_DIR", help="a run written by `scoreviz train` (holds checkpoint.pt)")
    a("--data", metavar="PATH", help="the dataset folder, if it moved since training (default: the run's own)")
    a("--epochs", type=int, default=100, help="epochs of the linear layer")
    a("--lr", type=float, default=30.0, help="learning rate")
    a("--schedule", type=int, nargs="*", default=[60, 80], help="epochs where lr drops 10x")
    a("--momentum", type=float, default=0.9, help="SGD momentum")
    a("--wd", type=float, default=0.0, help="weight decay")
    a("--batch-size", type=int, default=256, help="batch size")
    a("--workers", type=int, default=4, help="DataLoader workers (imagefolder)")
    a("--seed", type=int, default=0, help="seed of the linear layer and the data order")
    a("--device", help="cpu, cuda ... (default: cuda when available)")
    a("--quiet", action="store_true", help="no progress bar")
    return parser
