"""Linear evaluation of a trained run: ``scoreviz lincls RUN_DIR``.

The protocol of MoCo and the paper: the query encoder's backbone is frozen
(eval mode, so its BN statistics stay fixed), a linear layer is trained on its
pooled features with SGD (lr 30, momentum 0.9, no weight decay, lr drops 10x
at epochs 60 and 80), and top-1 accuracy is measured on the val split. The
length follows the reference for each dataset: 60 epochs on image folders,
the default of the authors' ImageNet-100 evaluation (their drops at 60 and 80
never come, so lr stays 30), and 100 epochs elsewhere, MoCo's ImageNet
protocol and the CIFAR demo's advice.
Training images get the run's crop and flip, no colour augmentation. The
accuracy goes into the run: ``results.json`` and the record's scalars
(``lincls_acc`` at the run's last step).
"""

import json
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

import scoreviz
from scoreviz.errors import ScorevizError
from scoreviz.trainer.augment import normalize, random_resized_crop, to_float
from scoreviz.trainer.data import IndexSampler, epoch_indices, load_dataset
from scoreviz.trainer.evaluate import eval_batches
from scoreviz.trainer.options import LINCLS_DEFAULT_EPOCHS as DEFAULT_EPOCHS
from scoreviz.trainer.options import LINCLS_EPOCHS as EPOCHS
from scoreviz.trainer.options import add_lincls_arguments as add_arguments  # noqa: F401 (the lincls API)
from scoreviz.trainer.train import CHECKPOINT, RESULTS, build_model, load_checkpoint, saved_settings


def _train_batches(data, run, batch_size, epoch, seed, device, workers):
    """Augmented (crop + flip) training batches, normalised, with labels."""
    indices = epoch_indices(len(data.train), epoch, seed, batch_size=batch_size)
    if data.in_memory:
        for idx in indices:
            x = random_resized_crop(to_float(data.train.images[idx].to(device)), data.image_size,
                                    scale=(run.crop_min, 1.0), flip=run.flip)
            yield normalize(x, data.mean, data.std), data.train.labels[idx].to(device)
        return
    loader = torch.utils.data.DataLoader(data.train.with_mode("crop", run.crop_min, run.flip), batch_size=batch_size,
                                         sampler=IndexSampler(indices), num_workers=workers, drop_last=True)
    for x, y in loader:
        yield normalize(to_float(x.to(device)), data.mean, data.std), y.to(device)


def main(args):
    """Train and evaluate the linear classifier; returns the val top-1 accuracy in percent."""
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    checkpoint = load_checkpoint(args.run_dir, missing=(
        f"{args.run_dir}: no {CHECKPOINT} in it; lincls evaluates a run trained by `scoreviz train` "
        f"(it writes {CHECKPOINT} after every epoch)"))
    run = saved_settings(checkpoint)
    epochs = args.epochs if args.epochs is not None else EPOCHS.get(run.dataset, DEFAULT_EPOCHS)
    if epochs <= 0:
        raise ScorevizError(f"--epochs: must be positive, got {epochs}")
    data = load_dataset(run.dataset, args.data or run.data, run.image_size)
    torch.manual_seed(args.seed)
    moco = build_model(run, data)
    moco.load_state_dict(checkpoint["model"])
    backbone = moco.encoder_q.backbone.to(device).eval()
    backbone.requires_grad_(False)

    linear = nn.Linear(backbone.out_dim, data.num_classes).to(device)
    nn.init.normal_(linear.weight, std=0.01)
    nn.init.zeros_(linear.bias)
    optimizer = torch.optim.SGD(linear.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.wd)
    batch_size = min(args.batch_size, len(data.train))
    for epoch in tqdm(range(epochs), desc="lincls", disable=args.quiet):
        for group in optimizer.param_groups:
            group["lr"] = args.lr * 0.1 ** sum(epoch >= m for m in args.schedule)
        for x, y in _train_batches(data, run, batch_size, epoch, args.seed, device, args.workers):
            with torch.no_grad():
                features = backbone(x)
            loss = F.cross_entropy(linear(features), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    correct = total = 0
    with torch.no_grad():
        for x, y in eval_batches(data.val, 512, device, args.workers):
            pred = linear(backbone(normalize(to_float(x), data.mean, data.std))).argmax(1)
            correct += (pred == y).sum().item()
            total += len(y)
    acc = 100.0 * correct / total

    results_path = os.path.join(args.run_dir, RESULTS)
    results = json.load(open(results_path)) if os.path.isfile(results_path) else {}
    results.update(lincls_acc=acc, lincls=dict(epochs=epochs, lr=args.lr, batch_size=batch_size))
    with open(results_path, "w") as f:
        json.dump(results, f, indent=2)
    with scoreviz.Recorder(args.run_dir) as rec:  # appends to the run's record
        rec.log_scalars(checkpoint["step"], lincls_acc=acc)
    if not args.quiet:
        print(f"linear top-1 accuracy {acc:.2f}%  ({args.run_dir})")
    return acc
