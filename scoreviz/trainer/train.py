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
import warnings
from datetime import datetime

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

import scoreviz
from scoreviz.errors import ScorevizError
from scoreviz.trainer.augment import Augment
from scoreviz.trainer.data import IndexSampler, epoch_indices, load_dataset
from scoreviz.trainer.evaluate import knn_accuracy, knn_k_for
from scoreviz.trainer.model import FT, MoCo, build_backbone
from scoreviz.trainer.options import (  # noqa: F401 (add_arguments: the trainer's API)
    BN_SPLITS_ONE_DEVICE, DATASET_DEFAULTS, KNN_K, RECIPES, VERSION_DEFAULTS, add_arguments)

# The option tables and add_arguments live in options.py (no torch: `scoreviz train --help` is quick).
# Settings a run recorded before they existed had these values; a resumed or
# evaluated old run keeps them, so it continues as it started.
SETTINGS_BEFORE_ISSUE_10 = dict(bn_splits=1, knn_features="backbone", lr_floor=0.0, recipe=None)
CHECKPOINT = "checkpoint.pt"
CLI_PLUMBING = ("func", "command")  # what the command line adds to the options: no setting of the run
RESULTS = "results.json"


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
    for name in ("pos_alpha", "neg_alpha", "epochs", "batch_size", "lr", "moco_k", "moco_t", "steps_per_epoch", "knn_k"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise ScorevizError(f"--{name.replace('_', '-')}: must be positive, got {value}")
    if args.ft_start_epoch < 0:
        raise ScorevizError(f"--ft-start-epoch: must be 0 or more, got {args.ft_start_epoch}")
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


def uses_ft(args) -> bool:
    """Whether the run transforms features at all (it then records tag ``ft`` at every step)."""
    return args.pos_alpha is not None or args.neg_alpha is not None


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
    # The settings only: the CLI's handler (``func``) would pickle a reference into whichever module ran
    # as __main__, and a run trained with `python -m scoreviz.cli train` could not be loaded anywhere else.
    settings = {k: v for k, v in vars(args).items() if k not in CLI_PLUMBING}
    state = dict(args=settings, epoch=epoch, step=step, model=model.state_dict(),
                 optimizer=optimizer.state_dict(), rng=rng, results=results)
    tmp = os.path.join(run_dir, CHECKPOINT + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, os.path.join(run_dir, CHECKPOINT))  # never leave a half-written checkpoint
    with open(os.path.join(run_dir, RESULTS), "w") as f:
        json.dump(results, f, indent=2)


def load_checkpoint(run_dir, map_location="cpu", missing=None):
    """The checkpoint dict of a run; ScorevizError when there is none or it is damaged.

    ``missing``: the message when there is no checkpoint (default: the one for ``--resume``).
    """
    path = os.path.join(run_dir, CHECKPOINT)
    if not os.path.isfile(path):
        raise ScorevizError(missing or f"--run-dir: no checkpoint at {path} to resume from")
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
        if uses_ft(args):  # a run without FT would record its raw scores again under "ft"
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
    if args.knn_k is None:  # follows the data: never more neighbours than the smallest class has images
        args.knn_k = knn_k_for(data.train.labels, KNN_K)
    if uses_ft(args) and args.ft_start_epoch >= args.epochs and rank == 0:
        warnings.warn(f"--ft-start-epoch {args.ft_start_epoch} is not before the run's last epoch "
                      f"(--epochs {args.epochs}): this run trains without feature transformation", stacklevel=2)
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
    config = {k: v for k, v in vars(args).items() if k not in CLI_PLUMBING + ("run_dir", "quiet")}
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
