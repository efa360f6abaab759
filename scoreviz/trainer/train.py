"""The MoCo(+FT) training loop: ``scoreviz train`` and ``python -m scoreviz.trainer``.

One process per device; under torchrun every process runs this same loop and
torch.distributed (gloo on CPU, nccl on GPU) keeps them in step. The run
directory holds the Recorder's scores.h5, ``checkpoint.pt`` (written every
epoch, enough to resume bit-exactly) and ``results.json``.
"""

import argparse
import json
import math
import os
import time
from datetime import datetime

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

import scoreviz
from scoreviz.errors import ScorevizError
from scoreviz.trainer.augment import Augment
from scoreviz.trainer.data import IndexSampler, epoch_indices, load_dataset
from scoreviz.trainer.evaluate import knn_accuracy
from scoreviz.trainer.model import FT, MoCo, build_backbone

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
                 crop_min=0.2, flip=True, knn_features="backbone", lr_floor=0.001)
_CIFAR = dict(arch="resnet18", batch_size=512, lr=0.06, wd=5e-4, moco_k=4096, moco_m=0.99, epochs=200,
              crop_min=0.08, flip=True, knn_features="head", lr_floor=0.0)
DATASET_DEFAULTS = {
    "imagefolder": _IMAGENET,
    "cifar10": _CIFAR,
    "cifar100": _CIFAR,
    # Digits are not mirror-symmetric and only 8 px wide: no flip, milder crops.
    "digits": dict(arch="small", batch_size=128, lr=0.06, wd=5e-4, moco_k=1024, moco_m=0.99, epochs=100,
                   crop_min=0.5, flip=False, knn_features="backbone", lr_floor=0.001),
}
# SplitBatchNorm groups on one device: MoCo's 8 GPUs, as its CIFAR demo emulates them.
BN_SPLITS_ONE_DEVICE = 8
# Settings a run recorded before they existed had these values; a resumed or
# evaluated old run keeps them, so it continues as it started.
SETTINGS_BEFORE_ISSUE_10 = dict(bn_splits=1, knn_features="backbone", lr_floor=0.0, recipe=None)
CHECKPOINT = "checkpoint.pt"
RESULTS = "results.json"


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
    a("--arch", choices=["small", "resnet18", "resnet50"], help="backbone (default per dataset)")
    a("--image-size", type=int, help="crop size for imagefolder (default 224)")
    a("--epochs", type=int)
    a("--batch-size", type=int, help="total batch over all processes")
    a("--lr", type=float, help="base learning rate")
    a("--momentum", type=float, default=0.9, help="SGD momentum")
    a("--wd", type=float, help="weight decay")
    a("--schedule", type=int, nargs="*", help="v1 step schedule: epochs where lr drops 10x (default 60%% and 80%% of epochs)")
    a("--cos", action=argparse.BooleanOptionalAction, default=None, help="cosine lr schedule (default: on for v2)")
    a("--lr-floor", type=float,
      help="where the cosine schedule ends, as a fraction of --lr (default 0.001 as the authors' code; 0 for cifar, "
           "as MoCo's CIFAR demo)")
    a("--moco-dim", type=int, default=128, help="feature dimension")
    a("--moco-k", type=int, help="queue size K")
    a("--moco-m", type=float, help="momentum of the key encoder")
    a("--moco-t", type=float, help="softmax temperature")
    a("--mlp", action=argparse.BooleanOptionalAction, default=None, help="2-layer MLP projection head (default: on for v2)")
    a("--bn-splits", type=int,
      help=f"shuffle-BN on one device: BatchNorm statistics over this many groups of each process's batch, the keys "
           f"shuffled (default {BN_SPLITS_ONE_DEVICE} on one device, as MoCo's CIFAR demo; 1 under torchrun, where the "
           f"keys are shuffled across processes)")
    a("--crop-min", type=float, help="smallest area fraction of RandomResizedCrop")
    a("--flip", action=argparse.BooleanOptionalAction, default=None, help="random horizontal flip (default: on, off for digits)")
    a("--blur", action=argparse.BooleanOptionalAction, default=None, help="Gaussian blur, p 0.5 (default: on for v2, off for v1 and the CIFAR demo)")
    a("--pos-alpha", type=float, help="positive extrapolation, lambda = 1 + Beta(a, a) (off when unset; paper: 2.0)")
    a("--neg-alpha", type=float, help="negative interpolation, lambda = Beta(a, a) (off when unset; paper: 1.6)")
    a("--per-dim", default="auto", choices=["auto", "none", "pos", "neg", "both"],
      help="which transformation draws one lambda per element ((B, D) for the positives, (K, D) for the queue) "
           "instead of one per batch, the authors' --dim_mask. auto (default): per element when only one "
           "transformation is on (the authors' pos-only and neg-only modes), none when both are")
    a("--ft-start-epoch", type=int, default=0, help="first epoch with feature transformation")
    a("--steps-per-epoch", type=int, help="stop each epoch after this many steps (quick checks)")
    a("--knn-k", type=int, default=200, help="neighbours of the kNN monitor (default 200)")
    a("--knn-t", type=float, default=0.1, help="temperature of the kNN monitor's vote (default 0.1)")
    a("--knn-features", choices=["backbone", "head"],
      help="what the kNN monitor compares: the backbone's pooled features, or the 128-d output of the projection "
           "head (default: head for cifar, as MoCo's CIFAR demo; backbone otherwise)")
    a("--record-every", type=int, default=1, help="Recorder: record every N steps")
    a("--workers", type=int, default=4, help="DataLoader workers (imagefolder)")
    a("--seed", type=int, default=0)
    a("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    a("--quiet", action="store_true", help="no progress bar")
    return parser


def resolve(args):
    """Fill the options left unset from the recipe, version and dataset defaults; check the rest."""
    # The dataset's recipe, when it has one and no version was asked for (recorded, and in the run's name).
    args.recipe = "demo" if args.moco_version is None and args.dataset in RECIPES else None
    tables = [RECIPES[args.dataset]] if args.recipe else []
    args.moco_version = args.moco_version or 2
    tables += [VERSION_DEFAULTS[args.moco_version], DATASET_DEFAULTS[args.dataset]]
    for table in tables:  # the first table that names a setting wins
        for key, value in table.items():
            if getattr(args, key, None) is None:
                setattr(args, key, value)
    world = _world_size()
    if args.bn_splits is None:
        args.bn_splits = BN_SPLITS_ONE_DEVICE if world == 1 else 1
    if args.per_dim == "auto":  # the authors' single-transform modes always mix per element
        only = {(True, False): "pos", (False, True): "neg"}
        args.per_dim = only.get((bool(args.pos_alpha), bool(args.neg_alpha)), "none")
    if args.schedule is None:
        args.schedule = [int(args.epochs * 0.6), int(args.epochs * 0.8)]
    if args.image_size is None:
        args.image_size = 224 if args.dataset == "imagefolder" else None
    if args.batch_size % world:
        raise ScorevizError(f"--batch-size: {args.batch_size} does not split over {world} processes")
    if args.bn_splits < 1 or (args.batch_size // world) % args.bn_splits:
        raise ScorevizError(f"--bn-splits: {args.bn_splits} must be a positive divisor of the batch per process "
                            f"({args.batch_size // world})")
    if args.moco_k % args.batch_size:
        raise ScorevizError(f"--moco-k: {args.moco_k} must be a multiple of --batch-size {args.batch_size}")
    for name in ("pos_alpha", "neg_alpha", "epochs", "batch_size", "lr", "moco_k", "moco_t", "steps_per_epoch"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise ScorevizError(f"--{name.replace('_', '-')}: must be positive, got {value}")
    if not 0 <= args.moco_m <= 1:
        raise ScorevizError(f"--moco-m: must lie in [0, 1], got {args.moco_m}")
    if not 0 <= args.lr_floor < 1:
        raise ScorevizError(f"--lr-floor: must lie in [0, 1), got {args.lr_floor}")
    return args


def saved_settings(checkpoint):
    """The settings a checkpoint was trained with, as a Namespace, filling in those older runs lack."""
    args = argparse.Namespace(**checkpoint["args"])
    for key, value in SETTINGS_BEFORE_ISSUE_10.items():
        if not hasattr(args, key):
            setattr(args, key, value)
    if not hasattr(args, "blur"):
        args.blur = args.moco_version == 2
    return args


def default_run_name(args):
    name = f"moco-{args.recipe or f'v{args.moco_version}'}-{args.dataset}"
    if args.pos_alpha:
        name += f"-pos{args.pos_alpha:g}"
    if args.neg_alpha:
        name += f"-neg{args.neg_alpha:g}"
    if args.per_dim != "none" and (args.pos_alpha or args.neg_alpha):
        name += f"-dim{args.per_dim}"  # per-element lambdas
    return name + datetime.now().strftime("-%Y%m%d-%H%M%S")


def ft_for_epoch(args, epoch):
    """The feature transformation settings in force during ``epoch``."""
    if epoch < args.ft_start_epoch:
        return FT()
    return FT(args.pos_alpha, args.neg_alpha, args.per_dim in ("pos", "both"), args.per_dim in ("neg", "both"))


def learning_rate(args, epoch):
    """Per-epoch lr: half-cosine from lr down to ``lr_floor * lr`` (v2), or 10x drops at ``args.schedule`` (v1).

    ``epoch`` counts from 0, as in MoCo's main_moco.py.
    """
    if args.cos:
        floor = args.lr * args.lr_floor
        return floor + (args.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * epoch / args.epochs))
    return args.lr * 0.1 ** sum(epoch >= milestone for milestone in args.schedule)


# --- distributed helpers ---------------------------------------------------------

def _world_size():
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def _rank():
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def setup_distributed(args):
    """Join the process group torchrun describes; returns (device, started_here)."""
    cuda = torch.cuda.is_available() and (args.device is None or args.device.startswith("cuda"))
    started = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
        started = True
    if cuda:
        device = torch.device(f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if _world_size() > 1 else (args.device or "cuda"))
        torch.cuda.set_device(device)
    else:
        device = torch.device(args.device or "cpu")
    return device, started


def _broadcast_object(obj):
    if _world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# --- RNG and checkpoints -----------------------------------------------------------

def _rng_state():
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if _world_size() == 1:
        return [state]
    states = [None] * _world_size()
    dist.all_gather_object(states, state)  # every rank's own stream, so all of them resume exactly
    return states


def _set_rng_state(states):
    state = states[_rank()]
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir, model, optimizer, args, epoch, step, results):
    """Everything needed to continue: weights, queue, optimizer, next epoch, step, RNG of every rank."""
    rng = _rng_state()  # collective: all ranks take part
    if _rank() != 0:
        return
    state = dict(args=vars(args), epoch=epoch, step=step, model=model.state_dict(),
                 optimizer=optimizer.state_dict(), rng=rng, results=results)
    tmp = os.path.join(run_dir, CHECKPOINT + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, os.path.join(run_dir, CHECKPOINT))  # never leave a half-written checkpoint
    with open(os.path.join(run_dir, RESULTS), "w") as f:
        json.dump(results, f, indent=2)


def load_checkpoint(run_dir, map_location="cpu"):
    """The checkpoint dict of a run; ScorevizError when there is none or it is damaged."""
    path = os.path.join(run_dir, CHECKPOINT)
    if not os.path.isfile(path):
        raise ScorevizError(f"--run-dir: no checkpoint at {path} to resume from")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:
        raise ScorevizError(f"{path}: cannot read checkpoint ({e})") from e


def build_model(args, data):
    backbone = build_backbone(args.arch, data.channels, data.image_size, args.bn_splits)
    return MoCo(backbone, args.moco_dim, args.moco_k, args.moco_m, args.moco_t, args.mlp)


# --- the loop ------------------------------------------------------------------------

def train_one_epoch(model, ddp_model, data, augment, optimizer, rec, args, epoch, step, device):
    """One pass over this rank's share of the data; returns the global step after it."""
    world, rank = _world_size(), _rank()
    indices = epoch_indices(len(data.train), epoch, args.seed, rank, world, args.batch_size)
    if args.steps_per_epoch:
        indices = indices[:args.steps_per_epoch]
    if len(indices) == 0:
        raise ScorevizError(f"--batch-size: {args.batch_size} is larger than the {len(data.train)} training images")
    if data.in_memory:
        images = data.train.images  # already on the device
        batches = ((images[idx.to(device)],) for idx in indices)
    else:
        loader = torch.utils.data.DataLoader(
            data.train.with_mode("pair", args.crop_min, args.flip), batch_size=args.batch_size // world,
            sampler=IndexSampler(indices), num_workers=args.workers, pin_memory=device.type == "cuda", drop_last=True)
        batches = ((x1.to(device, non_blocking=True), x2.to(device, non_blocking=True)) for x1, x2, _ in loader)

    ft = ft_for_epoch(args, epoch)
    lr = optimizer.param_groups[0]["lr"]
    cuda = device.type == "cuda"
    labels = torch.zeros(args.batch_size // world, dtype=torch.long, device=device)
    bar = tqdm(total=len(indices), desc=f"epoch {epoch + 1}/{args.epochs}", disable=rank != 0 or args.quiet, leave=False)
    start = time.perf_counter()
    for i, batch in enumerate(batches):
        # In-memory data: both views from one batch; image folders: crops came from the workers.
        x1, x2 = (augment(batch[0]), augment(batch[0])) if len(batch) == 1 else (augment(batch[0]), augment(batch[1]))
        if cuda:
            x1, x2 = x1.contiguous(memory_format=torch.channels_last), x2.contiguous(memory_format=torch.channels_last)
        step += 1
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            logits, raw, after = ddp_model(x1, x2, ft)
        loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()

        rec.log_scores(step, raw.pos, raw.neg, tag="raw")
        rec.log_embeddings(step, raw.q, raw.k, tag="raw")  # the query and key projections
        rec.log_scores(step, after.pos, after.neg, tag="ft")
        rec.log_gradients(step, model.encoder_q)
        rec.log_scalars(step, loss=loss.detach(), lr=lr)
        optimizer.step()

        bar.update(1)
        if i % 10 == 0 or i == len(indices) - 1:  # .item() syncs the device: not every step
            ips = (i + 1) * args.batch_size / (time.perf_counter() - start)
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.4g}", img_s=f"{ips:.0f}")
    bar.close()
    return step


def main(args, on_epoch=None):
    """Train MoCo(+FT) as ``args`` says; returns the trained (unwrapped) MoCo model.

    ``on_epoch(epoch, epochs, knn_acc)``, when given, is called on rank 0 after every epoch.
    """
    device, started_dist = setup_distributed(args)
    try:
        return _train(args, device, on_epoch)
    finally:
        if started_dist:
            dist.destroy_process_group()


def _train(args, device, on_epoch=None):
    rank, world = _rank(), _world_size()
    checkpoint = None
    if args.resume:
        if not args.run_dir:
            raise ScorevizError("--resume: needs --run-dir of the run to continue")
        checkpoint = load_checkpoint(args.run_dir)
        cli = args
        args = saved_settings(checkpoint)  # the run's own settings, so it continues identically
        args.run_dir, args.resume, args.quiet = cli.run_dir, True, cli.quiet
        # Where things are may change between machines; what is computed may not (except the length).
        for key in ("epochs", "data", "device"):
            if getattr(cli, key) is not None:
                setattr(args, key, getattr(cli, key))
    else:
        args = resolve(args)
        args.run_dir = _broadcast_object(args.run_dir or os.path.join("runs", default_run_name(args)))
    data = load_dataset(args.dataset, args.data, args.image_size)  # bad --data fails before any folder is made
    if rank == 0:
        os.makedirs(args.run_dir, exist_ok=True)
    torch.manual_seed(args.seed)  # same initial weights and queue on every rank
    model = build_model(args, data).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.encoder_q.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.wd)
    ddp_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None) \
        if world > 1 else model
    if data.in_memory:
        data.train.images = data.train.images.to(device)
    augment = Augment(args.moco_version, data.image_size, data.mean, data.std, args.crop_min, geometric=data.in_memory,
                      flip=args.flip, blur=args.blur)

    if checkpoint:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        start_epoch, step, results = checkpoint["epoch"], checkpoint["step"], checkpoint["results"]
        _set_rng_state(checkpoint["rng"])
    else:
        torch.manual_seed(args.seed + rank)  # each rank its own augmentations
        start_epoch, step, results = 0, 0, {"knn_acc": []}

    knn_net = model.encoder_q if args.knn_features == "head" else model.encoder_q.backbone
    knn = lambda: knn_accuracy(knn_net, data, device, args.knn_k, args.knn_t, args.workers)  # noqa: E731
    # the settings only: not the CLI's plumbing, nor the folder the run lives in
    config = {k: v for k, v in vars(args).items() if k not in ("func", "command", "run_dir", "quiet")}
    # FT does not re-normalise, so the scores of tag "ft" may leave [-1, 1]: that is no user mistake.
    with scoreviz.Recorder(args.run_dir, config=config, every=args.record_every, unbounded_tags=("ft",)) as rec:
        if checkpoint is None:
            # The same encoder at random initialisation: the baseline kNN accuracy.
            results["knn_acc_init"] = knn()
            rec.log_scalars(0, knn_acc=results["knn_acc_init"])
        for epoch in range(start_epoch, args.epochs):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(args, epoch)
            step = train_one_epoch(model, ddp_model, data, augment, optimizer, rec, args, epoch, step, device)
            acc = knn()
            rec.log_scalars(step, knn_acc=acc)
            results["knn_acc"].append(acc)
            results.update(epoch=epoch + 1, step=step, knn_acc_final=acc)
            if rank == 0 and not args.quiet:
                tqdm.write(f"epoch {epoch + 1}/{args.epochs}  knn_acc {acc:.2f}%  (init {results['knn_acc_init']:.2f}%)")
            save_checkpoint(args.run_dir, model, optimizer, args, epoch + 1, step, results)
            if rank == 0 and on_epoch:
                on_epoch(epoch + 1, args.epochs, acc)
    return model
