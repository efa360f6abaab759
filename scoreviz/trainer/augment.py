"""The paper's augmentations, on whole batches on the training device.

Every transformation draws its random parameters per image as tensors and
applies them with batched ops (affine_grid / grid_sample, grouped conv,
broadcasting): no per-image Python loop on the hot path. Randomness comes from
torch's global generator, so a checkpoint of the RNG state resumes exactly.

MoCo v1: RandomResizedCrop(0.2-1), RandomGrayscale(0.2), ColorJitter(0.4 x 4), flip.
MoCo v2: RandomResizedCrop(0.2-1), ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8,
         RandomGrayscale(0.2), GaussianBlur(sigma 0.1-2) p 0.5, flip.
MoCo's CIFAR demo: v2 without the blur, crops 0.08-1 (``blur=False``, ``crop_min``).
Differences from torchvision, by choice: the jitter order is fixed
(brightness, contrast, saturation, hue), hue is rotated in YIQ space, and the
blur sigma and kernel scale with the image size (paper values at 224 px).
"""

import math

import torch
import torch.nn.functional as F


def _uniform(n, low, high, device):
    return torch.rand(n, device=device) * (high - low) + low


def _coin(n, p, device):
    """(n, 1, 1, 1) boolean mask, True with probability p."""
    return (torch.rand(n, device=device) < p).view(n, 1, 1, 1)


def random_resized_crop(x, size, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3), flip=True):
    """Crop a random area fraction and aspect ratio of each image, resize to ``size``, maybe flip."""
    n, device = x.shape[0], x.device
    area = _uniform(n, *scale, device)
    log_r = _uniform(n, math.log(ratio[0]), math.log(ratio[1]), device)
    # Width and height as fractions of the image; clamping replaces torchvision's retry loop.
    w = torch.sqrt(area * torch.exp(log_r)).clamp(max=1.0)
    h = torch.sqrt(area / torch.exp(log_r)).clamp(max=1.0)
    cx = _uniform(n, -1.0, 1.0, device) * (1 - w)  # crop centre in [-1, 1] grid coordinates
    cy = _uniform(n, -1.0, 1.0, device) * (1 - h)
    sign = torch.where(torch.rand(n, device=device) < 0.5, -1.0, 1.0) if flip else torch.ones(n, device=device)
    theta = torch.zeros(n, 2, 3, device=device, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 2] = w * sign, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    grid = F.affine_grid(theta, (n, x.shape[1], size, size), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _gray(x):
    if x.shape[1] == 1:
        return x
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _blend(a, b, factor):
    """factor * a + (1 - factor) * b, clamped to [0, 1]."""
    return (factor * a + (1 - factor) * b).clamp(0, 1)


def _rotate_hue(x, angle):
    # Rotate the chroma plane of YIQ by ``angle`` radians: a cheap, batched hue shift.
    to_yiq = x.new_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    from_yiq = torch.linalg.inv(to_yiq)
    yiq = torch.einsum("ij,bjhw->bihw", to_yiq, x)
    c, s = torch.cos(angle).view(-1, 1, 1), torch.sin(angle).view(-1, 1, 1)
    i, q = yiq[:, 1], yiq[:, 2]
    yiq = torch.stack([yiq[:, 0], c * i - s * q, s * i + c * q], dim=1)
    return torch.einsum("ij,bjhw->bihw", from_yiq, yiq).clamp(0, 1)


def color_jitter(x, brightness, contrast, saturation, hue, p=1.0):
    """torchvision-style ColorJitter with per-image factors, applied with probability p."""
    n, device = x.shape[0], x.device
    view = (n, 1, 1, 1)
    out = (x * _uniform(n, 1 - brightness, 1 + brightness, device).view(view)).clamp(0, 1)
    mean = _gray(out).mean(dim=(1, 2, 3), keepdim=True)
    out = _blend(out, mean, _uniform(n, 1 - contrast, 1 + contrast, device).view(view))
    if x.shape[1] == 3:  # saturation and hue mean nothing for one channel
        out = _blend(out, _gray(out), _uniform(n, 1 - saturation, 1 + saturation, device).view(view))
        out = _rotate_hue(out, _uniform(n, -hue, hue, device) * 2 * math.pi)
    return torch.where(_coin(n, p, device), out, x)


def random_grayscale(x, p):
    if x.shape[1] == 1:
        return x
    return torch.where(_coin(x.shape[0], p, x.device), _gray(x).expand_as(x), x)


def gaussian_blur(x, sigma=(0.1, 2.0), p=0.5):
    """Per-image Gaussian blur as one grouped separable convolution."""
    n, c, h, w = x.shape
    size_scale = h / 224.0
    k = max(3, int(0.1 * h) // 2 * 2 + 1)  # odd kernel, about 10% of the image
    s = _uniform(n, sigma[0] * size_scale, sigma[1] * size_scale, x.device).clamp_min(1e-3)
    t = torch.arange(k, device=x.device, dtype=x.dtype) - k // 2
    kern = torch.exp(-(t[None] ** 2) / (2 * s[:, None] ** 2))
    kern = (kern / kern.sum(1, keepdim=True)).repeat_interleave(c, dim=0)  # (n*c, k)
    y = x.reshape(1, n * c, h, w)
    y = F.conv2d(F.pad(y, (k // 2, k // 2, 0, 0), mode="reflect" if w > k // 2 else "replicate"), kern.view(n * c, 1, 1, k), groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, k // 2, k // 2), mode="reflect" if h > k // 2 else "replicate"), kern.view(n * c, 1, k, 1), groups=n * c)
    return torch.where(_coin(n, p, x.device), y.view(n, c, h, w), x)


class Augment:
    """The MoCo v1 or v2 pipeline for a batch of images in [0, 1] (or uint8).

    ``geometric=False`` skips crop and flip, for data whose loader workers
    already cropped each image (image folders); the photometric part still
    runs here on the device. Output is normalised with ``mean`` and ``std``.
    """

    def __init__(self, version, size, mean, std, crop_min=0.2, geometric=True, flip=True, blur=None):
        self.version, self.size, self.crop_min, self.geometric, self.flip = version, size, crop_min, geometric, flip
        self.blur = version == 2 if blur is None else blur  # v2 blurs, v1 does not
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)

    def __call__(self, x):
        x = to_float(x)
        if self.geometric:
            x = random_resized_crop(x, self.size, scale=(self.crop_min, 1.0), flip=self.flip)
        if self.version == 1:
            x = random_grayscale(x, 0.2)
            x = color_jitter(x, 0.4, 0.4, 0.4, 0.4)
        else:
            x = color_jitter(x, 0.4, 0.4, 0.4, 0.1, p=0.8)
            x = random_grayscale(x, 0.2)
        if self.blur:
            x = gaussian_blur(x, (0.1, 2.0), p=0.5)
        if self.mean.device != x.device:  # move the constants once, not every batch
            self.mean, self.std = self.mean.to(x.device), self.std.to(x.device)
        return (x - self.mean) / self.std


def to_float(x):
    """uint8 images -> float in [0, 1]; float input is passed through."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x


def normalize(x, mean, std):
    """(x - mean) / std per channel; mean and std are sequences or tensors."""
    mean, std = torch.as_tensor(mean, device=x.device).view(1, -1, 1, 1), torch.as_tensor(std, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std
