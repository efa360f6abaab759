"""Evaluation of a backbone: weighted kNN accuracy on pooled features.

The kNN monitor is the one of MoCo's CIFAR demo (Wu et al. 2018): cosine
similarity to every training feature, the k nearest vote with weight
exp(similarity / t), t = 0.1. k is the demo's 200 where every class has at
least 200 training images, else the smallest class's count (``knn_k_for``):
with more neighbours than a class has images, even embeddings that put every
class in a tight cluster of its own get votes from other classes, so the
monitor would measure the class sizes as much as the representation (on the
digits, 139 to 146 training images a class, k 200 took 54 to 61 of every
image's neighbours from other classes). The features are those of any module
given: the backbone's pooled features, or the whole query encoder (the
projection head's output, as the CIFAR demo does).
"""

import torch
import torch.nn.functional as F

from scoreviz.trainer.augment import normalize, to_float


def eval_batches(split, batch_size, device, workers=0):
    """(images, labels) batches of a split in order, unaugmented, as uint8 on ``device``."""
    if hasattr(split, "images"):  # in memory
        for i in range(0, len(split), batch_size):
            yield split.images[i:i + batch_size].to(device), split.labels[i:i + batch_size].to(device)
        return
    loader = torch.utils.data.DataLoader(split.with_mode("center"), batch_size=batch_size, num_workers=workers,
                                         pin_memory=device.type == "cuda")
    for x, y in loader:
        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


@torch.no_grad()
def extract_features(net, split, mean, std, device, batch_size=512, workers=0):
    """L2-normalised features (N, D) of ``net`` and labels (N,) of a split, in eval mode."""
    was_training = net.training
    net.eval()
    feats, labels = [], []
    for x, y in eval_batches(split, batch_size, device, workers):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            f = net(normalize(to_float(x), mean, std))
        feats.append(F.normalize(f.float(), dim=1))
        labels.append(y)
    net.train(was_training)
    return torch.cat(feats), torch.cat(labels)


@torch.no_grad()
def knn_predict(features, bank, bank_labels, num_classes, k=200, t=0.1, chunk=1024):
    """Class predictions for ``features`` (N, D) by a weighted vote of their k nearest in ``bank`` (M, D)."""
    k = min(k, bank.shape[0])
    preds = []
    for f in features.split(chunk):
        sim, idx = (f @ bank.T).topk(k, dim=1)
        weight = (sim / t).exp()
        votes = torch.zeros(f.shape[0], num_classes, device=f.device)
        votes.scatter_add_(1, bank_labels[idx], weight)
        preds.append(votes.argmax(1))
    return torch.cat(preds)


def knn_k_for(labels, k_max=200):
    """The kNN monitor's k for a training split: ``k_max``, or the smallest class's count where it is lower."""
    counts = torch.bincount(labels.flatten().long().cpu())
    return int(min(k_max, counts[counts > 0].min().item()))


def knn_accuracy(net, data, device, k=200, t=0.1, workers=0):
    """Weighted kNN top-1 accuracy (percent) of ``net``'s features on the val split, train split as the bank."""
    bank, bank_labels = extract_features(net, data.train, data.mean, data.std, device, workers=workers)
    feats, labels = extract_features(net, data.val, data.mean, data.std, device, workers=workers)
    pred = knn_predict(feats, bank, bank_labels, data.num_classes, k, t)
    return 100.0 * (pred == labels).float().mean().item()
