"""Datasets for the trainer, all read from local disk (nothing is downloaded).

- ``digits``: the 8x8 handwritten digits of UCI (1,797 images, as scikit-learn
  ships them), bundled in ``digits.npz`` next to this file, split 80/20.
- ``cifar10`` / ``cifar100``: a folder in the standard python-pickle format.
- ``imagefolder``: ``train/`` and ``val/`` with one folder per class (ImageNet-100 layout).

Small datasets live in memory as uint8 tensors and are augmented on the device
in whole batches; image folders go through a DataLoader whose workers decode
and crop, the rest of the augmentation still running on the device.
"""

import math
import os
import pickle
from dataclasses import dataclass

import numpy as np
import torch

from scoreviz.errors import ScorevizError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class TensorSplit:
    """An in-memory split: uint8 images (N, C, H, W) and int64 labels (N,)."""
    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self):
        return len(self.labels)


@dataclass
class Dataset:
    name: str
    train: object  # TensorSplit or FolderSplit
    val: object
    num_classes: int
    channels: int
    image_size: int
    mean: tuple
    std: tuple

    @property
    def in_memory(self):
        return isinstance(self.train, TensorSplit)


def load_dataset(name, path=None, image_size=None):
    """Load ``digits``, ``cifar10``, ``cifar100`` or ``imagefolder`` (the last three from ``path``)."""
    if name == "digits":
        return load_digits()
    if name in ("cifar10", "cifar100"):
        return load_cifar(name, _need_path(name, path))
    if name == "imagefolder":
        return load_imagefolder(_need_path(name, path), image_size or 224)
    raise ScorevizError(f"--dataset: unknown dataset {name!r}")


def _need_path(name, path):
    if not path:
        raise ScorevizError(f"--data: dataset {name!r} needs --data PATH pointing at a local copy")
    if not os.path.isdir(path):
        raise ScorevizError(f"--data: {path!r} is not a directory")
    return path


# The digits as scikit-learn's load_digits() returns them (pixel values 0..16), stored
# with np.savez_compressed(path, images=d.images.astype(np.uint8), labels=d.target.astype(np.uint8));
# tests/test_trainer_data.py checks the copy against scikit-learn's.
DIGITS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "digits.npz")


def load_digits(val_fraction=0.2, seed=0):
    """The bundled digits as 1x8x8 uint8 images, a fixed stratified split (``val_fraction`` of each class)."""
    with np.load(DIGITS_FILE) as f:
        images, labels = f["images"], f["labels"].astype(np.int64)
    images = np.round(images * (255 / 16)).astype(np.uint8)[:, None]  # pixel values are 0..16
    g = torch.Generator().manual_seed(seed)
    val = []
    for c in range(10):  # the same share of every class in val
        members = np.flatnonzero(labels == c)
        picked = torch.randperm(len(members), generator=g)[:round(val_fraction * len(members))]
        val.append(members[picked.numpy()])
    is_val = np.zeros(len(labels), dtype=bool)
    is_val[np.concatenate(val)] = True
    split = lambda m: TensorSplit(torch.from_numpy(images[m]), torch.from_numpy(labels[m]))  # noqa: E731
    return Dataset("digits", split(~is_val), split(is_val), 10, 1, 8, (0.305,), (0.376,))


# --- CIFAR, python pickle format ---------------------------------------------

CIFAR = {
    # name: (sub-folder in the official archive, train files, test files, label key, classes, mean, std)
    # CIFAR-10's mean and std are those of MoCo's CIFAR demo (its std is the widely copied 0.2023, ...)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels", 10,
                (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels", 100,
                 (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def load_cifar(name, path):
    """CIFAR-10/100 from ``path`` (the extracted archive folder or its parent)."""
    sub, train_files, test_files, label_key, classes, mean, std = CIFAR[name]
    if os.path.isdir(os.path.join(path, sub)):
        path = os.path.join(path, sub)
    train = TensorSplit(*_read_cifar(path, train_files, label_key))
    val = TensorSplit(*_read_cifar(path, test_files, label_key))
    return Dataset(name, train, val, classes, 3, 32, mean, std)


def _read_cifar(folder, files, label_key):
    images, labels = [], []
    for fname in files:
        f = os.path.join(folder, fname)
        if not os.path.isfile(f):
            raise ScorevizError(f"--data: {f} is missing; expected the python-pickle CIFAR files {files}")
        try:
            with open(f, "rb") as fh:
                batch = pickle.load(fh, encoding="bytes")
            data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            lab = np.asarray(batch[label_key], dtype=np.int64)
        except Exception as e:  # wrong format, truncated file, missing key
            raise ScorevizError(f"--data: {f} is not a CIFAR python-pickle batch ({type(e).__name__}: {e})") from e
        if len(lab) != len(data):
            raise ScorevizError(f"--data: {f} has {len(data)} images but {len(lab)} labels")
        images.append(data)
        labels.append(lab)
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


# --- image folders --------------------------------------------------------------

class FolderSplit(torch.utils.data.Dataset):
    """Images under ``root/<class>/``; ``mode`` "pair" returns two random crops, "crop" one, "center" a centre crop.

    Items are uint8 tensors (3, size, size): the photometric augmentation
    happens later, batched on the device.
    """

    def __init__(self, root, classes, size, mode="center", crop_min=0.2, flip=True):
        self.root, self.size, self.mode, self.crop_min, self.flip = root, size, mode, crop_min, flip
        self.classes = classes
        self.samples = []
        for label, c in enumerate(classes):
            d = os.path.join(root, c)
            if not os.path.isdir(d):
                continue
            for f in sorted(os.listdir(d)):
                if f.lower().endswith(IMAGE_EXTENSIONS):
                    self.samples.append((os.path.join(d, f), label))
        if not self.samples:
            raise ScorevizError(f"--data: no images ({', '.join(IMAGE_EXTENSIONS)}) in the class folders of {root}")
        self.labels = torch.tensor([s[1] for s in self.samples])

    def __len__(self):
        return len(self.samples)

    def with_mode(self, mode, crop_min=None, flip=True):
        """A view of the same files returning items of another ``mode``."""
        other = FolderSplit.__new__(FolderSplit)
        other.__dict__.update(self.__dict__, mode=mode, crop_min=crop_min or self.crop_min, flip=flip)
        return other

    def __getitem__(self, i):
        from PIL import Image

        path, label = self.samples[i]
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")
        except Exception as e:
            raise ScorevizError(f"--data: cannot read image {path} ({e})") from e
        if self.mode == "pair":
            return _to_tensor(self._random_crop(img)), _to_tensor(self._random_crop(img)), label
        if self.mode == "crop":
            return _to_tensor(self._random_crop(img)), label
        return _to_tensor(self._center_crop(img)), label

    def _random_crop(self, img):
        """RandomResizedCrop + horizontal flip, drawn from torch's RNG (seeded per worker)."""
        from PIL import Image

        w, h = img.size
        area = w * h * float(torch.empty(1).uniform_(self.crop_min, 1.0))
        ratio = math.exp(float(torch.empty(1).uniform_(math.log(3 / 4), math.log(4 / 3))))
        cw = min(w, max(1, round(math.sqrt(area * ratio))))
        ch = min(h, max(1, round(math.sqrt(area / ratio))))
        x0 = int(torch.randint(0, w - cw + 1, ()))
        y0 = int(torch.randint(0, h - ch + 1, ()))
        out = img.resize((self.size, self.size), Image.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
        if self.flip and float(torch.rand(())) < 0.5:
            out = out.transpose(Image.FLIP_LEFT_RIGHT)
        return out

    def _center_crop(self, img):
        # Resize the short side to size / 0.875 (256 for 224), then take the centre.
        from PIL import Image

        w, h = img.size
        short = round(self.size / 0.875)
        s = short / min(w, h)
        img = img.resize((max(self.size, round(w * s)), max(self.size, round(h * s))), Image.BILINEAR)
        w, h = img.size
        x0, y0 = (w - self.size) // 2, (h - self.size) // 2
        return img.crop((x0, y0, x0 + self.size, y0 + self.size))


def _to_tensor(img):
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)


def load_imagefolder(path, image_size=224):
    """``path/train/<class>/*`` and ``path/val/<class>/*``; classes are the train sub-folders."""
    for part in ("train", "val"):
        if not os.path.isdir(os.path.join(path, part)):
            raise ScorevizError(f"--data: {os.path.join(path, part)} is missing; expected train/ and val/ with one folder per class")
    classes = sorted(e.name for e in os.scandir(os.path.join(path, "train")) if e.is_dir())
    if not classes:
        raise ScorevizError(f"--data: {os.path.join(path, 'train')} has no class sub-folders")
    unknown = sorted(e.name for e in os.scandir(os.path.join(path, "val")) if e.is_dir() and e.name not in classes)
    if unknown:
        raise ScorevizError(f"--data: {os.path.join(path, 'val')} has classes not in train/: {unknown[:5]}")
    train = FolderSplit(os.path.join(path, "train"), classes, image_size)
    val = FolderSplit(os.path.join(path, "val"), classes, image_size)
    return Dataset("imagefolder", train, val, len(classes), 3, image_size, IMAGENET_MEAN, IMAGENET_STD)


# --- iteration ---------------------------------------------------------------------

def epoch_indices(n, epoch, seed, rank=0, world=1, batch_size=256):
    """This rank's share of a seeded shuffle of range(n), in full per-rank batches (tail dropped).

    The order depends only on (seed, epoch), so a resumed run sees the same batches.
    """
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    perm = torch.randperm(n, generator=g)
    per_rank = batch_size // world
    steps = n // (per_rank * world)
    perm = perm[: steps * per_rank * world].view(steps, world, per_rank)
    return perm[:, rank]  # (steps, per_rank)


class IndexSampler(torch.utils.data.Sampler):
    """Feeds a DataLoader this rank's indices for one epoch, from ``epoch_indices``."""

    def __init__(self, indices):
        self.indices = indices.reshape(-1).tolist()

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)
