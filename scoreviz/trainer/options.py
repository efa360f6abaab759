"""The trainer's command-line options and their defaults, without torch.

``scoreviz train --help`` and ``scoreviz lincls --help`` build their parsers from
this module alone, so they answer at once; train.py and lincls.py import torch.
"""

import argparse

# The paper's settings per MoCo version (the rest of v1 is v2's, as in the authors' code).
VERSION_DEFAULTS = {
    1: dict(mlp=False, moco_t=0.07, cos=False, blur=False),
    2: dict(mlp=True, moco_t=0.2, cos=True, blur=True),
}
# A dataset's reference recipe, used unless --moco-version is given: CIFAR
# trains as MoCo's CIFAR demo does (linear head, t 0.1, v2's augmentation
# without blur, cosine lr), so its kNN accuracy compares with the demo's.
RECIPES = {
    "cifar10": dict(mlp=False, moco_t=0.1, cos=True, blur=False),
    "cifar100": dict(mlp=False, moco_t=0.1, cos=True, blur=False),
}
# Sizes per dataset: ImageNet-100 as in the paper, CIFAR as in MoCo's CIFAR
# demo (crops 0.08-1, kNN on the head's output, cosine down to 0), digits
# sized to train on a laptop CPU in a few minutes.
_IMAGENET = dict(arch="resnet50", batch_size=256, lr=0.03, wd=1e-4, moco_k=65536, moco_m=0.99, epochs=200,
                 crop_min=0.2, flip=True, knn_features="backbone", lr_floor=0.001, ft_start_epoch=0)
_CIFAR = dict(arch="resnet18", batch_size=512, lr=0.06, wd=5e-4, moco_k=4096, moco_m=0.99, epochs=200,
              crop_min=0.08, flip=True, knn_features="head", lr_floor=0.0, ft_start_epoch=0)
DATASET_DEFAULTS = {
    "imagefolder": _IMAGENET,
    "cifar10": _CIFAR,
    "cifar100": _CIFAR,
    # Digits are not mirror-symmetric and only 8 px wide: no flip, milder crops. FT starts after 10 epochs
    # (110 steps): from the first step it traps the small encoder in one cone (docs/trainer.md, ft_study.md).
    "digits": dict(arch="small", batch_size=128, lr=0.06, wd=5e-4, moco_k=1024, moco_m=0.99, epochs=100,
                   crop_min=0.5, flip=False, knn_features="backbone", lr_floor=0.001, ft_start_epoch=10),
}
# SplitBatchNorm groups on one device: MoCo's 8 GPUs, as its CIFAR demo emulates them.
BN_SPLITS_ONE_DEVICE = 8
# The kNN monitor's k: MoCo's CIFAR demo's, unless a class has fewer training images (evaluate.knn_k_for).
KNN_K = 200
# Linear-evaluation epochs per dataset (see lincls.py's docstring).
LINCLS_EPOCHS = {"imagefolder": 60}
LINCLS_DEFAULT_EPOCHS = 100


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
    a("--dataset", default="digits", choices=sorted(DATASET_DEFAULTS),
      help="training data (default: digits, bundled). cifar10/cifar100 default to MoCo's CIFAR demo (ResNet-18, "
           "batch 512, K 4096, linear head, t 0.1, crops 0.08-1, no blur, 8 BN groups, kNN on the head's output); "
           "imagefolder to the paper's ImageNet-100 settings (ResNet-50, batch 256, K 65536)")
    a("--data", metavar="PATH", help="local folder of the dataset (cifar10, cifar100, imagefolder)")
    a("--run-dir", metavar="PATH", help="where the record, checkpoints and results go (default: a new folder under runs/)")
    a("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint, with its saved settings (only --epochs may change)")
    a("--moco-version", type=int, choices=[1, 2],
      help="MoCo v1 (linear head, t 0.07, step lr) or v2 (MLP head, t 0.2, blur, cosine lr). Default: 2, "
           "except cifar10/cifar100, which train as MoCo's CIFAR demo (linear head, t 0.1, no blur, cosine lr)")
    a("--arch", choices=["small", "resnet18", "resnet50"], help=f"backbone ({per_dataset('arch')})")
    a("--image-size", type=int, help="crop size for imagefolder (default 224)")
    a("--epochs", type=int, help=f"epochs to train ({per_dataset('epochs')})")
    a("--batch-size", type=int, help=f"total batch over all processes ({per_dataset('batch_size')})")
    a("--lr", type=float, help=f"base learning rate ({per_dataset('lr')})")
    a("--momentum", type=float, default=0.9, help="SGD momentum")
    a("--wd", type=float, help=f"weight decay ({per_dataset('wd')})")
    a("--schedule", type=int, nargs="*", help="v1 step schedule: epochs where lr drops 10x (default 60%% and 80%% of epochs)")
    a("--cos", action=argparse.BooleanOptionalAction, default=None, help="cosine lr schedule (default: on for v2)")
    a("--lr-floor", type=float,
      help="where the cosine schedule ends, as a fraction of --lr (default 0.001 as the authors' code; 0 for cifar, "
           "as MoCo's CIFAR demo)")
    a("--moco-dim", type=int, default=128, help="feature dimension")
    a("--moco-k", type=int, help=f"queue size K ({per_dataset('moco_k')})")
    a("--moco-m", type=float, help=f"momentum of the key encoder ({per_dataset('moco_m')})")
    a("--moco-t", type=float, help=f"softmax temperature ({per_version('moco_t')}; cifar10/cifar100 without --moco-version: 0.1, "
                                   f"as MoCo's CIFAR demo)")
    a("--mlp", action=argparse.BooleanOptionalAction, default=None, help="2-layer MLP projection head (default: on for v2)")
    a("--bn-splits", type=int,
      help=f"shuffle-BN on one device: BatchNorm statistics over this many groups of each process's batch, the keys "
           f"shuffled (default {BN_SPLITS_ONE_DEVICE} on one device, as MoCo's CIFAR demo; 1 under torchrun, where the "
           f"keys are shuffled across processes)")
    a("--crop-min", type=float, help=f"smallest area fraction of RandomResizedCrop ({per_dataset('crop_min')})")
    a("--flip", action=argparse.BooleanOptionalAction, default=None, help="random horizontal flip (default: on, off for digits)")
    a("--blur", action=argparse.BooleanOptionalAction, default=None, help="Gaussian blur, p 0.5 (default: on for v2, off for v1 and the CIFAR demo)")
    a("--pos-alpha", type=float, help="positive extrapolation, lambda = 1 + Beta(a, a) (default: off; paper: 2.0)")
    a("--neg-alpha", type=float, help="negative interpolation, lambda = Beta(a, a) (default: off; paper: 1.6)")
    a("--per-dim", default="auto", choices=["auto", "none", "pos", "neg", "both"],
      help="which transformation draws one lambda per element ((B, D) for the positives, (K, D) for the queue) "
           "instead of one per batch, the authors' --dim_mask. auto (default): per element when only one "
           "transformation is on (the authors' pos-only and neg-only modes), none when both are")
    a("--ft-start-epoch", type=int,
      help=f"first epoch with feature transformation, counted from 0 ({per_dataset('ft_start_epoch')}: on the small "
           f"digits FT from the first step traps the encoder, see docs/trainer.md)")
    a("--steps-per-epoch", type=int, help="stop each epoch after this many steps (quick checks; default: whole epochs)")
    a("--knn-k", type=int,
      help=f"neighbours of the kNN monitor, MoCo's CIFAR demo's {KNN_K} but at most the smallest class's "
           f"training images: 139 on digits (default: {KNN_K})")
    a("--knn-t", type=float, default=0.1, help="temperature of the kNN monitor's vote")
    a("--knn-features", choices=["backbone", "head"],
      help="what the kNN monitor compares: the backbone's pooled features, or the 128-d output of the projection "
           "head (default: head for cifar, as MoCo's CIFAR demo; backbone otherwise)")
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
    a("--epochs", type=int, help=f"epochs of the linear layer (default {LINCLS_EPOCHS['imagefolder']} for imagefolder, "
                                 f"the authors' ImageNet-100 setting; {LINCLS_DEFAULT_EPOCHS} otherwise, MoCo's protocol)")
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
