"""Feature transformations for contrastive learning (Zhu et al., ICCV 2021).

Two plug-and-play operations on L2-normalised features, usable in any trainer:

    q_hat, k_hat = positive_extrapolation(q, k, alpha=2.0)    # harder positives
    neg_hat = negative_interpolation(queue, alpha=1.6)        # more diverse negatives

Both draw their mixing coefficient lambda from a Beta(alpha, alpha) law: one
scalar for the whole batch (or queue), or, with ``per_dim=True``, one per
element of the features, the authors' dimension-level mixing (``dim_mask`` in
their ``memory/mem_moco.py``): a (B, D) tensor for the positive pair and a
(K, D) tensor for the queue, every element drawn independently. Nothing is
re-normalised afterwards, exactly as in the authors' code. With a
``torch.Generator`` the draws are reproducible, on CPU and on CUDA, and no
value is copied to the host (so no device sync on the training hot path).
"""

import numbers

import torch

from scoreviz.errors import ScorevizError

__all__ = ["positive_extrapolation", "negative_interpolation", "sample_beta"]


def _standard_gamma(alpha, shape, generator, device):
    # torch.distributions cannot take a generator; the kernel under it can. The
    # draw happens on the generator's device (torch refuses a CPU generator for
    # CUDA tensors) and is moved afterwards.
    gen_device = generator.device if generator is not None else torch.device(device)
    concentration = torch.full(shape, float(alpha), device=gen_device)
    return torch._standard_gamma(concentration, generator=generator).to(device)


def sample_beta(alpha, shape=(), generator=None, device="cpu"):
    """Draw independent Beta(alpha, alpha) samples of the given shape, float32 on ``device``."""
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not alpha > 0:
        raise ScorevizError(f"alpha: must be a positive number, got {alpha!r}")
    x = _standard_gamma(alpha, tuple(shape), generator, device)
    y = _standard_gamma(alpha, tuple(shape), generator, device)
    # Both gammas underflow to 0 only for tiny alpha; the clamp keeps that case finite.
    return x / (x + y).clamp_min(torch.finfo(x.dtype).tiny)


def positive_extrapolation(q, k, alpha, per_dim=False, generator=None):
    """Extrapolate a positive pair apart to make it harder.

    ``q_hat = l q + (1 - l) k`` and ``k_hat = l k + (1 - l) q`` with
    ``l = 1 + Beta(alpha, alpha)`` in [1, 2]: one scalar for the batch, or,
    when ``per_dim``, one per element (a (B, D) tensor). For unit vectors and a
    scalar ``l`` the positive score becomes ``S + 2 l (1 - l)(1 - S) <= S``.

    ``k`` is detached (the key encoder gets no gradient), so the gradient
    reaches ``q`` through both mixed vectors. q, k: (B, D) tensors.
    Returns ``(q_hat, k_hat)``, not re-normalised.
    """
    if q.shape != k.shape or q.dim() != 2:
        raise ScorevizError(f"q, k: need two (B, D) tensors of one shape, got {tuple(q.shape)} and {tuple(k.shape)}")
    k = k.detach()
    shape = q.shape if per_dim else ()
    lam = (1.0 + sample_beta(alpha, shape, generator, q.device)).to(q.dtype)
    q_hat = lam * q + (1.0 - lam) * k
    k_hat = lam * k + (1.0 - lam) * q
    return q_hat, k_hat


def negative_interpolation(queue, alpha, per_dim=False, generator=None):
    """Mix the negatives with a shuffled copy of themselves.

    ``queue_hat = l Z + (1 - l) Z[perm]`` with ``l ~ Beta(alpha, alpha)`` in
    [0, 1] (one scalar, or, when ``per_dim``, one per element: a (K, D)
    tensor) and a fresh random permutation of the K rows. ``queue``: (K, D),
    one negative per row. The lambdas are drawn before the permutation.
    Returns a new detached tensor; the queue passed in is never modified, so
    the trainer keeps enqueueing the un-mixed keys.
    """
    if queue.dim() != 2:
        raise ScorevizError(f"queue: need a (K, D) tensor, got shape {tuple(queue.shape)}")
    queue = queue.detach()
    shape = queue.shape if per_dim else ()
    lam = sample_beta(alpha, shape, generator, queue.device).to(queue.dtype)
    gen_device = generator.device if generator is not None else queue.device
    perm = torch.randperm(queue.shape[0], generator=generator, device=gen_device).to(queue.device)
    return lam * queue + (1.0 - lam) * queue[perm]
