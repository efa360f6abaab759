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
CHECKPOINT = "checkpoint.pt"
RESULTS = "results.json"


def add_arguments(parser):
    """Add the training options to an argparse parser (used by ``scoreviz train``)."""
    a = parser.add_argument
    a("--dataset", default="digits", choices=sorted(DATASET_DEFAULTS), help="training data (default: digits, bundled)")
    a("--data", metavar="PATH", help="local folder of the dataset (cifar10, cifar100, imagefolder)")
    a("--run-dir", metavar="PATH", help="where the record, checkpoints and results go (default: a new folder under runs/)")
    a("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint, with its saved settings (only --epochs may change)")
    a("--moco-version", type=int, default=2, choices=[1, 2], help="MoCo v1 (linear head, t 0.07) or v2 (MLP head, t 0.2, cosine lr)")
    a("--arch", choices=["small", "resnet18", "resnet50"], help="backbone (default per dataset)")
    a("--image-size", type=int, help="crop size for imagefolder (default 224)")
    a("--epochs", type=int)
    a("--batch-size", type=int, help="total batch over all processes")
    a("--lr", type=float, help="base learning rate")
    a("--momentum", type=float, default=0.9, help="SGD momentum")
    a("--wd", type=float, help="weight decay")
    a("--schedule", type=int, nargs="*", help="v1 step schedule: epochs where lr drops 10x (default 60%% and 80%% of epochs)")
    a("--cos", action=argparse.BooleanOptionalAction, default=None, help="cosine lr schedule (default: on for v2)")
    a("--moco-dim", type=int, default=128, help="feature dimension")
    a("--moco-k", type=int, help="queue size K")
    a("--moco-m", type=float, help="momentum of the key encoder")
    a("--moco-t", type=float, help="softmax temperature")
    a("--crop-min", type=float, help="smallest area fraction of RandomResizedCrop")
    a("--flip", action=argparse.BooleanOptionalAction, default=None, help="random horizontal flip (default: on, off for digits)")
    a("--pos-alpha", type=float, help="positive extrapolation, lambda = 1 + Beta(a, a) (off when unset; paper: 2.0)")
    a("--neg-alpha", type=float, help="negative interpolation, lambda = Beta(a, a) (off when unset; paper: 1.6)")
    a("--per-dim", default="none", choices=["none", "pos", "neg", "both"], help="which transformation draws one lambda per dimension")
    a("--ft-start-epoch", type=int, default=0, help="first epoch with feature transformation")
    a("--steps-per-epoch", type=int, help="stop each epoch after this many steps (quick checks)")
    a("--knn-k", type=int, default=200)
    a("--knn-t", type=float, default=0.1)
    a("--record-every", type=int, default=1, help="Recorder: record every N steps")
    a("--workers", type=int, default=4, help="DataLoader workers (imagefolder)")
    a("--seed", type=int, default=0)
    a("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    a("--quiet", action="store_true", help="no progress bar")
    return parser


def resolve(args):
    """Fill the options left unset from the version and dataset defaults; check the rest."""
    for table in (VERSION_DEFAULTS[args.moco_version], DATASET_DEFAULTS[args.dataset]):
        for key, value in table.items():
            if getattr(args, key, None) is None:
                setattr(args, key, value)
    if args.schedule is None:
        args.schedule = [int(args.epochs * 0.6), int(args.epochs * 0.8)]
    if args.image_size is None:
        args.image_size = 224 if args.dataset == "imagefolder" else None
    world = _world_size()
    if args.batch_size % world:
        raise ScorevizError(f"--batch-size: {args.batch_size} does not split over {world} processes")
    if args.moco_k % args.batch_size:
        raise ScorevizError(f"--moco-k: {args.moco_k} must be a multiple of --batch-size {args.batch_size}")
    for name in ("pos_alpha", "neg_alpha", "epochs", "batch_size", "lr", "moco_k", "moco_t", "steps_per_epoch"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise ScorevizError(f"--{name.replace('_', '-')}: must be positive, got {value}")
    if not 0 <= args.moco_m <= 1:
        raise ScorevizError(f"--moco-m: must lie in [0, 1], got {args.moco_m}")
    return args


def default_run_name(args):
    name = f"moco-v{args.moco_version}-{args.dataset}"
    if args.pos_alpha:
        name += f"-pos{args.pos_alpha:g}"
    if args.neg_alpha:
        name += f"-neg{args.neg_alpha:g}"
    if args.per_dim != "none" and (args.pos_alpha or args.neg_alpha):
        name += f"-dim{args.per_dim}"
    return name + datetime.now().strftime("-%Y%m%d-%H%M%S")


def ft_for_epoch(args, epoch):
    """The feature transformation settings in force during ``epoch``."""
    if epoch < args.ft_start_epoch:
        return FT()
    return FT(args.pos_alpha, args.neg_alpha, args.per_dim in ("pos", "both"), args.per_dim in ("neg", "both"))


def learning_rate(args, epoch):
    """Per-epoch lr: half-cosine (v2) or 10x drops at ``args.schedule`` (v1), as MoCo does."""
    if args.cos:
        return args.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / args.epochs))
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
    backbone = build_backbone(args.arch, data.channels, data.image_size)
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
        args = argparse.Namespace(**checkpoint["args"])  # the run's own settings, so it continues identically
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
    augment = Augment(args.moco_version, data.image_size, data.mean, data.std, args.crop_min, geometric=data.in_memory, flip=args.flip)

    if checkpoint:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        start_epoch, step, results = checkpoint["epoch"], checkpoint["step"], checkpoint["results"]
        _set_rng_state(checkpoint["rng"])
    else:
        torch.manual_seed(args.seed + rank)  # each rank its own augmentations
        start_epoch, step, results = 0, 0, {"knn_acc": []}

    knn = lambda: knn_accuracy(model.encoder_q.backbone, data, device, args.knn_k, args.knn_t, args.workers)  # noqa: E731
    # the settings only: not the CLI's plumbing, nor the folder the run lives in
    config = {k: v for k, v in vars(args).items() if k not in ("func", "command", "run_dir", "quiet")}
    with scoreviz.Recorder(args.run_dir, config=config, every=args.record_every) as rec:
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
