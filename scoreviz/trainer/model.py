"""Backbones and the MoCo(+FT) model, written in plain torch.

``MoCo`` holds the whole method in one class, in the spirit of
facebookresearch/moco's builder.py: a query encoder, a momentum key encoder,
a queue of negatives, and the feature transformations of scoreviz.ft applied
just before the logits.

Shuffle-BN on one device follows MoCo's CIFAR demo: every BatchNorm of both
encoders is a ``SplitBatchNorm2d`` that normalises each of ``bn_splits``
groups of the batch with that group's own statistics (as if each group ran on
its own GPU), and the key encoder sees the batch in a fresh random order, so
a query and its key never share BN statistics. Under torch.distributed the
keys are shuffled across processes instead, as in MoCo's builder.py.
"""

import copy
import functools
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from scoreviz.ft import negative_interpolation, positive_extrapolation


# --- shuffle-BN on one device ------------------------------------------------

class SplitBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that, in training, normalises ``num_splits`` groups of the batch separately.

    Group j holds the samples j, j + s, j + 2s, ... (s = num_splits), which
    lets one reshape do the work: (N, C, H, W) -> (N / s, s * C, H, W). Each
    group gets its own mean and variance, exactly what s GPUs with N / s
    samples each would compute; the running statistics are the mean of the
    groups' updates. In eval mode it is a plain BatchNorm2d, and its
    state_dict has the same keys, so checkpoints move freely between the two.
    """

    def __init__(self, num_features, num_splits=1, **kwargs):
        super().__init__(num_features, **kwargs)
        if num_splits < 1:
            raise ValueError(f"num_splits must be a positive integer, got {num_splits}")
        if self.momentum is None:
            raise ValueError("SplitBatchNorm2d needs a momentum (the cumulative average is not supported)")
        self.num_splits = num_splits

    def forward(self, x):
        s = self.num_splits
        if s == 1 or not self.training or not self.track_running_stats:
            return super().forward(x)
        n, c = x.shape[:2]
        if n % s:
            raise ValueError(f"SplitBatchNorm2d: a batch of {n} does not split into {s} equal groups")
        mean, var = self.running_mean.repeat(s), self.running_var.repeat(s)
        weight = self.weight.repeat(s) if self.weight is not None else None
        bias = self.bias.repeat(s) if self.bias is not None else None
        out = F.batch_norm(x.reshape(n // s, s * c, *x.shape[2:]), mean, var, weight, bias, True, self.momentum, self.eps)
        with torch.no_grad():
            self.running_mean.copy_(mean.view(s, c).mean(0))
            self.running_var.copy_(var.view(s, c).mean(0))
            self.num_batches_tracked.add_(1)
        out = out.reshape(x.shape)
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            out = out.contiguous(memory_format=torch.channels_last)  # keep the convolutions' layout
        return out

    def extra_repr(self):
        return super().extra_repr() + f", num_splits={self.num_splits}"


def norm_layer(bn_splits=1):
    """The BatchNorm2d class to build with: plain, or split into ``bn_splits`` groups."""
    return functools.partial(SplitBatchNorm2d, num_splits=bn_splits) if bn_splits > 1 else nn.BatchNorm2d


# --- backbones: image batch -> pooled features (B, out_dim) -----------------

class SmallConvNet(nn.Module):
    """A small conv net for 8x8 images (scikit-learn digits): two conv pairs, one pool, global average."""

    def __init__(self, in_channels=1, width=32, norm=nn.BatchNorm2d):
        super().__init__()

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), norm(cout), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(in_channels, width), *block(width, 2 * width), nn.MaxPool2d(2),  # 8x8 -> 4x4
            *block(2 * width, 4 * width), *block(4 * width, 4 * width),
        )
        self.out_dim = 4 * width

    def forward(self, x):
        return self.features(x).mean(dim=(2, 3))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, width, stride, norm=nn.BatchNorm2d):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = norm(width)
        self.conv2 = nn.Conv2d(width, cout, 3, 1, 1, bias=False)
        self.bn2 = norm(cout)
        self.shortcut = _shortcut(cin, cout, stride, norm)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x), inplace=True)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, width, stride, norm=nn.BatchNorm2d):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = norm(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = norm(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = norm(cout)
        self.shortcut = _shortcut(cin, cout, stride, norm)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        return F.relu(self.bn3(self.conv3(out)) + self.shortcut(x), inplace=True)


def _shortcut(cin, cout, stride, norm):
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), norm(cout))


class ResNet(nn.Module):
    """ResNet; ``small_stem`` swaps the 7x7/2 conv + max-pool for one 3x3/1 conv (32x32 inputs)."""

    def __init__(self, block, layers, in_channels=3, small_stem=False, norm=nn.BatchNorm2d):
        super().__init__()
        if small_stem:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), norm(64), nn.ReLU(inplace=True))
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False), norm(64),
                                      nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        stages, cin = [], 64
        for i, n in enumerate(layers):
            width = 64 * 2 ** i
            for j in range(n):
                stages.append(block(cin, width, 2 if (j == 0 and i > 0) else 1, norm))
                cin = width * block.expansion
        self.stages = nn.Sequential(*stages)
        self.out_dim = cin
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        return self.stages(self.stem(x)).mean(dim=(2, 3))


def build_backbone(arch, in_channels=3, image_size=224, bn_splits=1):
    """``small`` | ``resnet18`` | ``resnet50``; ResNets get the small stem below 64 px.

    ``bn_splits`` > 1 builds every BatchNorm as a SplitBatchNorm2d of that many groups.
    """
    small_stem, norm = image_size < 64, norm_layer(bn_splits)
    if arch == "small":
        return SmallConvNet(in_channels, norm=norm)
    if arch == "resnet18":
        return ResNet(BasicBlock, [2, 2, 2, 2], in_channels, small_stem, norm)
    if arch == "resnet50":
        return ResNet(Bottleneck, [3, 4, 6, 3], in_channels, small_stem, norm)
    raise ValueError(f"unknown arch {arch!r}")


class Encoder(nn.Module):
    """Backbone followed by a projection head: linear (MoCo v1) or 2-layer MLP (v2)."""

    def __init__(self, backbone, dim=128, mlp=False):
        super().__init__()
        self.backbone = backbone
        d = backbone.out_dim
        self.head = nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, dim)) if mlp else nn.Linear(d, dim)

    def forward(self, x):
        return self.head(self.backbone(x))


# --- MoCo ---------------------------------------------------------------------

@dataclass
class FT:
    """Which feature transformations to apply this step (alpha None = off).

    ``pos_per_dim`` / ``neg_per_dim``: one lambda per element ((B, D) for the
    positive pair, (K, D) for the queue) instead of one scalar.
    """
    pos_alpha: float = None
    neg_alpha: float = None
    pos_per_dim: bool = False
    neg_per_dim: bool = False


@dataclass
class Scores:
    """Positive (B,) and negative (B, K) scores, detached, for the Recorder; the raw scores
    also carry the query and key projections (B, dim) they came from."""
    pos: torch.Tensor
    neg: torch.Tensor
    q: torch.Tensor = None
    k: torch.Tensor = None


def contrastive_logits(q, k, queue, T, ft=FT()):
    """InfoNCE logits (B, 1 + K), column 0 positive, and the scores before and after FT.

    q, k: (B, D) unit vectors (k without gradient), queue: (K, D). Everything
    here runs in float32, also under autocast (as in the authors' code): a
    bf16 ``q @ queue.T`` holds scores near 1 only in steps of 2^-8 (0.004), a
    large error once divided by T = 0.07. The
    negatives are scored against the mixed query, as in the authors' code.
    """
    with torch.autocast(q.device.type, enabled=False):
        q, k, queue = q.float(), k.float(), queue.float()
        pos, neg = (q * k).sum(1), q @ queue.T
        raw = after = Scores(pos.detach(), neg.detach(), q.detach(), k)
        if ft.pos_alpha or ft.neg_alpha:
            if ft.pos_alpha:
                q, k = positive_extrapolation(q, k, ft.pos_alpha, ft.pos_per_dim)
            if ft.neg_alpha:
                queue = negative_interpolation(queue, ft.neg_alpha, ft.neg_per_dim)
            pos, neg = (q * k).sum(1), q @ queue.T
            after = Scores(pos.detach(), neg.detach())
        logits = torch.cat([pos[:, None], neg], dim=1) / T
    return logits, raw, after


def _distributed():
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class MoCo(nn.Module):
    """MoCo v1/v2 with optional feature transformation.

    forward(im_q, im_k, ft) returns the logits (column 0 positive, already
    divided by T, float32) and the scores before ("raw") and after ("ft") the
    transformation. The key encoder uses shuffle-BN: across processes under
    torch.distributed, and on one device whenever the backbone's BatchNorms
    are split (SplitBatchNorm2d, MoCo's CIFAR demo). The queue is global
    (every rank enqueues the keys of all ranks).
    """

    def __init__(self, backbone, dim=128, K=65536, m=0.99, T=0.2, mlp=True):
        super().__init__()
        self.K, self.m, self.T = K, m, T
        self.encoder_q = Encoder(backbone, dim, mlp)
        self.encoder_k = copy.deepcopy(self.encoder_q)
        for p in self.encoder_k.parameters():
            p.requires_grad = False  # updated by momentum only
        # Shuffling on one device only matters when BN statistics come from parts of the batch.
        self.split_bn = any(isinstance(mod, SplitBatchNorm2d) and mod.num_splits > 1 for mod in backbone.modules())
        # One negative per row (K, dim), the layout scoreviz.ft expects.
        self.register_buffer("queue", F.normalize(torch.randn(K, dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def _momentum_update_key_encoder(self):
        q_params = list(self.encoder_q.parameters())
        k_params = list(self.encoder_k.parameters())
        torch._foreach_mul_(k_params, self.m)
        torch._foreach_add_(k_params, q_params, alpha=1.0 - self.m)

    @torch.no_grad()
    def _dequeue_and_enqueue(self, keys):
        keys = concat_all_gather(keys)
        # Index arithmetic on the device: no host sync, and wraps around K.
        idx = (self.queue_ptr + torch.arange(keys.shape[0], device=keys.device)) % self.K
        self.queue.index_copy_(0, idx, keys.to(self.queue.dtype))
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % self.K)

    @torch.no_grad()
    def _keys(self, im_k):
        """Unit key features (float32) of im_k; BN sees the batch shuffled (shuffle-BN)."""
        if _distributed():
            im_all = concat_all_gather(im_k)
            perm = torch.randperm(im_all.shape[0], device=im_all.device)
            dist.broadcast(perm, src=0)  # one shuffle for all ranks
            rank, n = dist.get_rank(), im_k.shape[0]
            mine = perm[rank * n:(rank + 1) * n]
            k = F.normalize(self.encoder_k(im_all[mine]).float(), dim=1)
            k_all = concat_all_gather(k)
            unshuffle = torch.argsort(perm)
            return k_all[unshuffle][rank * n:(rank + 1) * n]
        if not self.split_bn:
            return F.normalize(self.encoder_k(im_k).float(), dim=1)
        perm = torch.randperm(im_k.shape[0], device=im_k.device)
        k = F.normalize(self.encoder_k(im_k[perm]).float(), dim=1)
        return k[torch.argsort(perm)]

    def forward(self, im_q, im_k, ft=FT()):
        q = F.normalize(self.encoder_q(im_q).float(), dim=1)
        with torch.no_grad():
            self._momentum_update_key_encoder()
            k = self._keys(im_k)
        # A copy: the enqueue below writes into the queue that the backward pass still needs.
        logits, raw, after = contrastive_logits(q, k, self.queue.clone().detach(), self.T, ft)
        self._dequeue_and_enqueue(k)  # the stored queue gets the un-mixed keys
        return logits, raw, after


@torch.no_grad()
def concat_all_gather(x):
    """All ranks' tensors concatenated along dim 0 (identity without torch.distributed)."""
    if not _distributed():
        return x
    out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)
