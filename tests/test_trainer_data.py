"""Trainer data: CIFAR pickle and image-folder loaders on generated files, augmentations, backbones."""

import argparse
import pickle

import numpy as np
import pytest
import torch

from scoreviz.errors import ScorevizError
from scoreviz.trainer import augment, data, model, train


def write_cifar(folder, name, n_per_file=6, seed=0):
    """Real python-pickle batches in the official layout; returns (images, labels) written per split."""
    rng = np.random.default_rng(seed)
    sub, train_files, test_files, label_key, classes, _, _ = data.CIFAR[name]
    root = folder / sub
    root.mkdir(parents=True)
    written = {}
    for split, files in (("train", train_files), ("val", test_files)):
        imgs, labs = [], []
        for f in files:
            x = rng.integers(0, 256, (n_per_file, 3072), dtype=np.uint8)
            y = rng.integers(0, classes, n_per_file).tolist()
            with open(root / f, "wb") as fh:
                pickle.dump({b"batch_label": b"x", label_key: y, b"data": x, b"filenames": [b"f"] * n_per_file}, fh)
            imgs.append(x)
            labs += y
        written[split] = (np.concatenate(imgs).reshape(-1, 3, 32, 32), np.array(labs))
    return written


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_loader(tmp_path, name):
    written = write_cifar(tmp_path, name)
    for path in (tmp_path, tmp_path / data.CIFAR[name][0]):  # the parent or the archive folder itself
        ds = data.load_dataset(name, str(path))
        assert ds.in_memory and ds.channels == 3 and ds.image_size == 32
        assert ds.num_classes == (10 if name == "cifar10" else 100)
        for split in ("train", "val"):
            s = getattr(ds, split)
            assert s.images.dtype == torch.uint8 and s.images.shape[1:] == (3, 32, 32)
            assert np.array_equal(s.images.numpy(), written[split][0])
            assert np.array_equal(s.labels.numpy(), written[split][1])
    assert len(ds.train) == (30 if name == "cifar10" else 6)


def test_cifar_loader_errors_name_the_file(tmp_path):
    write_cifar(tmp_path, "cifar10")
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(b"not a pickle")
    with pytest.raises(ScorevizError, match="data_batch_3"):
        data.load_dataset("cifar10", str(tmp_path))
    batch.unlink()
    with pytest.raises(ScorevizError, match="data_batch_3 is missing"):
        data.load_dataset("cifar10", str(tmp_path))
    with pytest.raises(ScorevizError, match="--data"):
        data.load_dataset("cifar100", str(tmp_path / "nope"))


def write_imagefolder(root, classes=("ant", "bee", "cat"), per_class=3, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for part in ("train", "val"):
        for c in classes:
            (root / part / c).mkdir(parents=True)
            for i in range(per_class):
                w, h = rng.integers(20, 60, 2)
                arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / part / c / f"{i}.png")
    (root / "train" / "ant" / "notes.txt").write_text("not an image")


def test_imagefolder_loader(tmp_path):
    write_imagefolder(tmp_path)
    ds = data.load_dataset("imagefolder", str(tmp_path), image_size=16)
    assert not ds.in_memory and ds.num_classes == 3 and ds.train.classes == ["ant", "bee", "cat"]
    assert len(ds.train) == 9 and len(ds.val) == 9  # the .txt file is skipped
    assert ds.train.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    x, y = ds.val[4]
    assert x.shape == (3, 16, 16) and x.dtype == torch.uint8 and y == 1
    torch.manual_seed(0)
    a, b, y = ds.train.with_mode("pair", 0.2)[0]
    assert a.shape == b.shape == (3, 16, 16) and not torch.equal(a, b)
    loader = torch.utils.data.DataLoader(ds.train.with_mode("pair"), batch_size=4, num_workers=2)
    a, b, y = next(iter(loader))
    assert a.shape == (4, 3, 16, 16) and y.tolist() == [0, 0, 0, 1]


def test_imagefolder_errors(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(ScorevizError, match="val"):
        data.load_dataset("imagefolder", str(tmp_path))
    (tmp_path / "val" / "zebra").mkdir(parents=True)
    with pytest.raises(ScorevizError, match="zebra"):
        data.load_dataset("imagefolder", str(tmp_path))
    (tmp_path / "val" / "zebra").rmdir()
    with pytest.raises(ScorevizError, match="no images"):
        data.load_dataset("imagefolder", str(tmp_path))


def test_bundled_digits_are_scikit_learns():
    sk = pytest.importorskip("sklearn.datasets").load_digits()
    with np.load(data.DIGITS_FILE) as f:
        assert np.array_equal(f["images"], sk.images) and np.array_equal(f["labels"], sk.target)
    d = data.load_digits()
    assert len(d.train) + len(d.val) == 1797 and len(d.val) == 359
    assert d.val.labels.bincount().tolist() == [36, 36, 35, 37, 36, 36, 36, 36, 35, 36]  # 20% of every class
    assert d.train.images.dtype == torch.uint8 and d.train.images.shape[1:] == (1, 8, 8)
    assert int(d.train.images.max()) == 255
    again = data.load_digits()
    assert torch.equal(again.val.images, d.val.images)  # a fixed split


def test_epoch_indices_split_ranks_and_repeat():
    a0 = data.epoch_indices(100, 3, 0, rank=0, world=2, batch_size=20)
    a1 = data.epoch_indices(100, 3, 0, rank=1, world=2, batch_size=20)
    assert a0.shape == (5, 10)
    assert len(set(a0.flatten().tolist()) | set(a1.flatten().tolist())) == 100  # disjoint, complete
    assert torch.equal(a0, data.epoch_indices(100, 3, 0, rank=0, world=2, batch_size=20))
    assert not torch.equal(a0, data.epoch_indices(100, 4, 0, rank=0, world=2, batch_size=20))


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("channels", [1, 3])
def test_augment_batches(version, channels):
    x = torch.randint(0, 256, (16, channels, 32, 32), dtype=torch.uint8)
    aug = augment.Augment(version, 24, [0.5] * channels, [0.25] * channels)
    torch.manual_seed(0)
    a = aug(x)
    torch.manual_seed(0)
    b = aug(x)
    assert a.shape == (16, channels, 24, 24) and a.dtype == torch.float32
    assert torch.equal(a, b)  # reproducible from the global RNG
    assert torch.isfinite(a).all()
    assert a.min() >= -2 - 1e-5 and a.max() <= 2 + 1e-5  # images in [0, 1] after normalisation


def test_full_crop_without_flip_is_identity():
    x = torch.rand(4, 3, 16, 16)
    out = augment.random_resized_crop(x, 16, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False)
    torch.testing.assert_close(out, x)
    gray = augment.random_grayscale(x, 1.0)
    assert torch.equal(gray[:, 0], gray[:, 1])
    assert torch.equal(augment.gaussian_blur(x, p=0.0), x)
    blurred = augment.gaussian_blur(torch.rand(2, 3, 224, 224), p=1.0)
    assert blurred.std() < 0.29  # uniform noise has std 0.289; blur lowers it


@pytest.mark.parametrize("arch,size,pooled", [("small", 8, 128), ("resnet18", 32, 512), ("resnet50", 32, 2048), ("resnet18", 64, 512)])
def test_backbones(arch, size, pooled):
    net = model.build_backbone(arch, in_channels=1 if arch == "small" else 3, image_size=size)
    assert net.out_dim == pooled
    out = net(torch.randn(2, 1 if arch == "small" else 3, size, size))
    assert out.shape == (2, pooled)
    if arch.startswith("resnet"):
        small_stem = size < 64
        assert (net.stem[0].kernel_size == (3, 3)) == small_stem  # 3x3/1 stem for 32x32 images


def parse(*argv):
    return train.add_arguments(argparse.ArgumentParser()).parse_args(list(argv))


@pytest.mark.slow
def test_one_step_on_cifar_files(tmp_path):
    write_cifar(tmp_path, "cifar10", n_per_file=8)
    moco = train.main(parse("--dataset", "cifar10", "--data", str(tmp_path), "--run-dir", str(tmp_path / "run"),
                            "--epochs", "1", "--batch-size", "8", "--moco-k", "16", "--steps-per-epoch", "1", "--quiet"))
    assert moco.encoder_q.backbone.stem[0].kernel_size == (3, 3)
    assert (tmp_path / "run" / "checkpoint.pt").is_file()


@pytest.mark.slow
def test_one_step_on_imagefolder(tmp_path):
    write_imagefolder(tmp_path / "data", per_class=4)
    train.main(parse("--dataset", "imagefolder", "--data", str(tmp_path / "data"), "--run-dir", str(tmp_path / "run"),
                     "--arch", "resnet18", "--image-size", "32", "--epochs", "1", "--batch-size", "6", "--moco-k", "12",
                     "--bn-splits", "2", "--workers", "1", "--quiet"))
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
