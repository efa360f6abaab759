"""The trainer's model and settings against the reference code: shuffle-BN on one
device (SplitBatchNorm), fp32 logits under autocast, per-element FT, the CIFAR
demo's defaults, the authors' lr floor, and the `ft` tag recorded without the
misuse warning."""

import argparse
import copy
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import scoreviz
from scoreviz.errors import ScorevizError
from scoreviz.trainer import train
from scoreviz.trainer.data import load_dataset
from scoreviz.trainer.evaluate import knn_k_for
from scoreviz.trainer.model import FT, MoCo, SplitBatchNorm2d, build_backbone, contrastive_logits
from scoreviz.trainer.options import KNN_K


def parse(*argv):
    return train.add_arguments(argparse.ArgumentParser()).parse_args(list(argv))


# ---------------------------------------------------------------- SplitBatchNorm2d

def test_split_bn_equals_batchnorm_on_each_split():
    torch.manual_seed(0)
    n, c, s = 16, 3, 4
    x = torch.randn(n, c, 5, 5, dtype=torch.float64, requires_grad=True)
    split = SplitBatchNorm2d(c, num_splits=s).double()
    with torch.no_grad():
        split.weight.uniform_(0.5, 1.5)
        split.bias.uniform_(-0.5, 0.5)
    plain = [copy.deepcopy(nn.BatchNorm2d(c)).double() for _ in range(s)]
    for bn in plain:
        bn.load_state_dict({k: v for k, v in split.state_dict().items()})

    out = split(x)
    xs = x.detach().clone().requires_grad_(True)
    expected = torch.empty_like(out)
    for j, bn in enumerate(plain):  # group j: samples j, j + s, j + 2s, ...
        expected[j::s] = bn(xs[j::s])
    torch.testing.assert_close(out, expected)

    # the groups really differ from one batch over all samples
    assert not torch.allclose(out, F.batch_norm(x.detach(), None, None, split.weight.detach(), split.bias.detach(), True))
    # running statistics: the mean of the groups' updates
    torch.testing.assert_close(split.running_mean, torch.stack([bn.running_mean for bn in plain]).mean(0))
    torch.testing.assert_close(split.running_var, torch.stack([bn.running_var for bn in plain]).mean(0))
    assert int(split.num_batches_tracked) == 1

    # gradients to the input and to the affine parameters
    w = torch.randn_like(out)
    (out * w).sum().backward()
    (expected * w).sum().backward()
    torch.testing.assert_close(x.grad, xs.grad)
    torch.testing.assert_close(split.weight.grad, sum(bn.weight.grad for bn in plain))
    torch.testing.assert_close(split.bias.grad, sum(bn.bias.grad for bn in plain))


def test_split_bn_in_eval_mode_and_channels_last():
    torch.manual_seed(0)
    split, plain = SplitBatchNorm2d(4, num_splits=2), nn.BatchNorm2d(4)
    x = torch.randn(8, 4, 3, 3)
    split(x)  # one training step moves the running statistics
    plain.load_state_dict(split.state_dict())  # same keys as BatchNorm2d
    split.eval(), plain.eval()
    torch.testing.assert_close(split(x), plain(x))

    split.train()
    ref = split(x)
    cl = split(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(cl, ref)
    assert cl.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="does not split"):
        split(torch.randn(7, 4, 3, 3))


def test_bn_splits_build_split_layers_everywhere():
    for arch, size in (("small", 8), ("resnet18", 32)):
        net = build_backbone(arch, 3, size, bn_splits=4)
        norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
        assert norms and all(isinstance(m, SplitBatchNorm2d) and m.num_splits == 4 for m in norms)
        assert not any(isinstance(m, SplitBatchNorm2d) for m in build_backbone(arch, 3, size).modules())


# ---------------------------------------------------------------- shuffle-BN on one device

def small_moco(bn_splits, K=64):
    torch.manual_seed(0)
    return MoCo(build_backbone("small", 1, 8, bn_splits), dim=16, K=K, m=0.99, T=0.2, mlp=True)


def test_one_device_shuffle_bn_keys_are_each_group_of_a_shuffled_batch():
    s, n = 4, 16
    moco = small_moco(s)
    assert moco.split_bn
    im_k = torch.randn(n, 1, 8, 8)
    torch.manual_seed(1)
    keys = moco._keys(im_k)

    # By hand: the same permutation, then plain BatchNorm over each group alone.
    torch.manual_seed(1)
    perm = torch.randperm(n)
    reference = copy.deepcopy(moco.encoder_k)
    for mod in reference.modules():
        if isinstance(mod, SplitBatchNorm2d):
            mod.num_splits = 1  # a plain BatchNorm2d
    shuffled = im_k[perm]
    feats = torch.empty(n, 16)
    for j in range(s):
        feats[j::s] = F.normalize(reference(shuffled[j::s]), dim=1)
    torch.testing.assert_close(keys, feats[torch.argsort(perm)])


def test_shuffle_changes_nothing_but_the_bn_statistics_batch():
    moco = small_moco(4)
    im_k = torch.randn(16, 1, 8, 8)
    moco.eval()  # no batch statistics: shuffling and splitting must not change a single key
    torch.testing.assert_close(moco._keys(im_k), F.normalize(moco.encoder_k(im_k), dim=1), rtol=0, atol=1e-6)
    moco.train()
    keys = moco._keys(im_k)
    assert not torch.allclose(keys, F.normalize(moco.encoder_k(im_k), dim=1), atol=1e-3)  # training: they do differ
    # Without split BN, a single device neither shuffles nor draws a permutation.
    plain = small_moco(1)
    assert not plain.split_bn
    state = torch.get_rng_state()
    torch.testing.assert_close(plain._keys(im_k), F.normalize(plain.encoder_k(im_k), dim=1))
    assert torch.equal(torch.get_rng_state(), state)


# ---------------------------------------------------------------- fp32 logits

def test_logits_stay_float32_under_bf16_autocast():
    torch.manual_seed(0)
    q, k = F.normalize(torch.randn(32, 128), dim=1), F.normalize(torch.randn(32, 128), dim=1)
    queue = F.normalize(torch.randn(512, 128), dim=1)
    for ft in (FT(), FT(2.0, 1.6, True, True)):
        torch.manual_seed(1)
        ref_logits, ref_raw, ref_after = contrastive_logits(q, k, queue, 0.07, ft)
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits, raw, after = contrastive_logits(q, k, queue, 0.07, ft)
        assert logits.dtype == raw.neg.dtype == after.neg.dtype == torch.float32
        assert torch.equal(logits, ref_logits) and torch.equal(raw.neg, ref_raw.neg) and torch.equal(after.neg, ref_after.neg)
    # What the guard prevents: the same product under autocast is bf16 and visibly off.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = q @ queue.T
    assert low.dtype == torch.bfloat16
    assert (low.float() - q @ queue.T).abs().max() > 1e-4


def test_model_forward_under_autocast_gives_float32_logits():
    moco = small_moco(2)
    x1, x2 = torch.randn(8, 1, 8, 8), torch.randn(8, 1, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, raw, after = moco(x1, x2, FT(2.0, 1.6))
    assert logits.dtype == raw.pos.dtype == raw.neg.dtype == torch.float32
    assert logits.shape == (8, 1 + 64)


# ---------------------------------------------------------------- settings

def test_per_dim_auto_follows_the_authors_modes():
    def per_dim(*argv):
        return train.resolve(parse(*argv)).per_dim

    assert per_dim("--pos-alpha", "2") == "pos"  # positive-only: per element, as the authors always do
    assert per_dim("--neg-alpha", "1.6") == "neg"
    assert per_dim("--pos-alpha", "2", "--neg-alpha", "1.6") == "none"  # their ImageNet-100 command
    assert per_dim() == "none"
    assert per_dim("--pos-alpha", "2", "--per-dim", "none") == "none"  # a scalar lambda stays selectable
    ft = train.ft_for_epoch(train.resolve(parse("--neg-alpha", "1.6", "--ft-start-epoch", "0")), 0)
    assert ft.neg_per_dim and not ft.pos_per_dim


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_cifar_defaults_are_mocos_cifar_demo(dataset):
    args = train.resolve(parse("--dataset", dataset, "--data", "somewhere"))
    demo = dict(arch="resnet18", batch_size=512, lr=0.06, wd=5e-4, moco_k=4096, moco_m=0.99, moco_t=0.1, epochs=200,
                mlp=False, cos=True, crop_min=0.08, flip=True, blur=False, bn_splits=8, knn_features="head",
                knn_t=0.1, moco_dim=128, lr_floor=0.0, ft_start_epoch=0)
    assert {key: getattr(args, key) for key in demo} == demo
    # k is the demo's 200 where every class has as many training images (CIFAR: 5,000 or 500 a class)
    assert args.knn_k is None and knn_k_for(torch.arange(100).repeat(500), KNN_K) == 200
    assert args.recipe == "demo" and train.default_run_name(args).startswith(f"moco-demo-{dataset}-")
    # An explicit version gives that version's method on CIFAR's sizes.
    v2 = train.resolve(parse("--dataset", dataset, "--data", "x", "--moco-version", "2"))
    assert (v2.mlp, v2.moco_t, v2.blur, v2.batch_size, v2.crop_min, v2.recipe) == (True, 0.2, True, 512, 0.08, None)
    v1 = train.resolve(parse("--dataset", dataset, "--data", "x", "--moco-version", "1", "--mlp"))
    assert (v1.mlp, v1.moco_t, v1.cos, v1.blur) == (True, 0.07, False, False)


def test_knn_k_follows_the_data():
    """No more neighbours than the smallest class has training images (digits: 139 to 146 a class)."""
    assert knn_k_for(load_dataset("digits").train.labels, KNN_K) == 139
    assert knn_k_for(torch.tensor([0, 0, 0, 2, 2, 2, 2]), 200) == 3  # a class without images is no class
    assert knn_k_for(torch.tensor([0, 1] * 300), 200) == 200


def test_imagenet_and_digits_defaults():
    inet = train.resolve(parse("--dataset", "imagefolder", "--data", "x"))
    assert (inet.arch, inet.batch_size, inet.moco_k, inet.moco_t, inet.mlp, inet.crop_min, inet.bn_splits) == \
        ("resnet50", 256, 65536, 0.2, True, 0.2, 8)
    assert inet.knn_features == "backbone" and inet.lr_floor == 0.001
    assert inet.ft_start_epoch == 0  # the authors' --mix_start_epoch default: FT from the first step
    digits = train.resolve(parse("--pos-alpha", "2"))
    assert digits.ft_start_epoch == 10 and train.ft_for_epoch(digits, 9).pos_alpha is None  # the digits' warm-up
    assert train.ft_for_epoch(digits, 10).pos_alpha == 2
    assert train.resolve(parse("--pos-alpha", "2", "--ft-start-epoch", "0")).ft_start_epoch == 0
    with pytest.raises(ScorevizError, match="--ft-start-epoch"):
        train.resolve(parse("--ft-start-epoch", "-1"))
    v1 = train.resolve(parse("--moco-version", "1"))
    assert (v1.mlp, v1.moco_t, v1.cos, v1.blur) == (False, 0.07, False, False)


def test_cosine_lr_ends_at_the_authors_floor():
    args = train.resolve(parse("--epochs", "10"))
    lrs = [train.learning_rate(args, e) for e in range(11)]
    assert lrs[0] == args.lr
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert lrs[10] == pytest.approx(0.001 * args.lr)  # where the half cosine arrives
    assert lrs[9] > 0.001 * args.lr
    zero = train.resolve(parse("--epochs", "10", "--lr-floor", "0"))
    assert train.learning_rate(zero, 10) == pytest.approx(0.0, abs=1e-15)


def test_bad_new_options():
    with pytest.raises(ScorevizError, match="--bn-splits"):
        train.resolve(parse("--batch-size", "32", "--bn-splits", "5"))
    with pytest.raises(ScorevizError, match="--bn-splits"):
        train.resolve(parse("--bn-splits", "0"))
    with pytest.raises(ScorevizError, match="--lr-floor"):
        train.resolve(parse("--lr-floor", "1.5"))


def test_old_checkpoints_keep_their_settings():
    old = vars(train.resolve(parse()))
    for key in ("bn_splits", "blur", "knn_features", "lr_floor"):
        del old[key]
    args = train.saved_settings({"args": old})
    assert (args.bn_splits, args.blur, args.knn_features, args.lr_floor) == (1, True, "backbone", 0.0)


# ---------------------------------------------------------------- the ft tag and the range warning

def range_warnings(caught):
    return [w for w in caught if "outside [-1, 1]" in str(w.message)]


@pytest.mark.slow
def test_trainer_records_ft_scores_out_of_range_without_the_misuse_warning(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train.main(parse("--run-dir", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "32", "--moco-k", "128",
                         "--steps-per-epoch", "3", "--knn-k", "20", "--pos-alpha", "0.2", "--neg-alpha", "1.6",
                         "--ft-start-epoch", "0", "--quiet"))
    after = scoreviz.open_run(tmp_path / "run").scores("ft")
    assert (after["pos_out_of_range"] + after["neg_out_of_range"]).sum() > 0  # the scores did leave [-1, 1]
    assert range_warnings(caught) == []


def test_unbounded_tags_silence_only_their_own_tag(tmp_path):
    logits = torch.full((4, 9), 5.0)  # a user's mistake: logits passed as scores
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with scoreviz.Recorder(tmp_path / "a", unbounded_tags=("ft",)) as rec:
            rec.log_scores(1, logits[:, 0], logits[:, 1:], tag="ft")
            rec.flush()
            assert range_warnings(caught) == []
            rec.log_scores(1, logits[:, 0], logits[:, 1:], tag="train")
    assert len(range_warnings(caught)) == 1 and "'train'" in str(range_warnings(caught)[0].message)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with scoreviz.Recorder(tmp_path / "b") as rec:  # by default every tag warns
            rec.log_scores(1, logits[:, 0], logits[:, 1:], tag="ft")
    assert len(range_warnings(caught)) == 1
    for bad in ("ft", 3, [1], None):
        with pytest.raises(ScorevizError, match="unbounded_tags"):
            scoreviz.Recorder(tmp_path / "c", unbounded_tags=bad)
