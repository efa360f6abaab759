"""Feature transformations for contrastive learning (Zhu et al., ICCV 2021).

Two plug-and-play operations on L2-normalised features, usable in any trainer:

    q_hat, k_hat = positive_extrapolation(q, k, alpha=2.0)    # harder positives
    neg_hat = negative_interpolation(queue, alpha=1.6)        # more diverse negatives

Both draw their mixing coefficient lambda from a Beta(alpha, alpha) law, one
scalar per batch or, with ``per_dim=True``, one per feature dimension. Nothing
is re-normalised afterwards, exactly as in the authors' code. With a
``torch.Generator`` the draws are reproducible, on CPU and on CUDA, and no
value is copied to the host (so no device sync on the training hot path).
"""

import torch

from scoreviz.errors import ScorevizError

__all__ = ["positive_extrapolation", "negative_interpolation", "sample_beta"]


def _rand(kind, shape, generator, device):
    # Draw from the generator's own device: torch refuses a CPU generator for
    # CUDA tensors, so the draw happens there and is moved afterwards.
    gen_device = generator.device if generator is not None else device
    fn = torch.randn if kind == "normal" else torch.rand
    return fn(shape, generator=generator, device=gen_device).to(device, non_blocking=True)


def _sample_gamma(alpha, shape, generator, device, tries=16):
    """Gamma(alpha, 1) draws by Marsaglia and Tsang's method, fully vectorised.

    torch.distributions cannot take a generator, so we sample ourselves. Each
    draw gets ``tries`` candidates and keeps the first accepted one; for the
    shape alpha + 1 >= 1 used here acceptance is above 95%, so all 16 failing
    has probability below 1e-20 (the last candidate is then kept anyway).
    """
    # Gamma(a) = Gamma(a + 1) * U^(1/a) lets small alpha use the fast branch.
    a = alpha + 1.0
    d = a - 1.0 / 3.0
    c = 1.0 / (9.0 * d) ** 0.5
    x = _rand("normal", (tries, *shape), generator, device)
    u = _rand("uniform", (tries, *shape), generator, device)
    v = (1.0 + c * x) ** 3
    ok = (v > 0) & (torch.log(u) < 0.5 * x * x + d - d * v + d * torch.log(v.clamp_min(1e-30)))
    ok[-1] = True
    first = ok.to(torch.uint8).argmax(dim=0, keepdim=True)  # index of the first accepted candidate
    g = (d * v).gather(0, first).squeeze(0)
    boost = _rand("uniform", shape, generator, device).clamp_min(1e-30) ** (1.0 / alpha)
    return g * boost


def sample_beta(alpha, shape=(), generator=None, device="cpu"):
    """Draw Beta(alpha, alpha) samples of the given shape, float32 on ``device``."""
    if not alpha or alpha <= 0:
        raise ScorevizError(f"alpha: must be a positive number, got {alpha!r}")
    x = _sample_gamma(float(alpha), tuple(shape), generator, device)
    y = _sample_gamma(float(alpha), tuple(shape), generator, device)
    return x / (x + y)


def positive_extrapolation(q, k, alpha, per_dim=False, generator=None):
    """Extrapolate a positive pair apart to make it harder.

    ``q_hat = l q + (1 - l) k`` and ``k_hat = l k + (1 - l) q`` with
    ``l = 1 + Beta(alpha, alpha)`` in [1, 2]: one scalar for the batch, or one
    per feature dimension when ``per_dim``. For unit vectors the positive score
    becomes ``S + 2 l (1 - l)(1 - S) <= S``.

    ``k`` is detached (the key encoder gets no gradient), so the gradient
    reaches ``q`` through both mixed vectors. q, k: (B, D) tensors.
    Returns ``(q_hat, k_hat)``, not re-normalised.
    """
    if q.shape != k.shape or q.dim() != 2:
        raise ScorevizError(f"q, k: need two (B, D) tensors of one shape, got {tuple(q.shape)} and {tuple(k.shape)}")
    k = k.detach()
    shape = (q.shape[1],) if per_dim else ()
    lam = (1.0 + sample_beta(alpha, shape, generator, q.device)).to(q.dtype)
    q_hat = lam * q + (1.0 - lam) * k
    k_hat = lam * k + (1.0 - lam) * q
    return q_hat, k_hat


def negative_interpolation(queue, alpha, per_dim=False, generator=None):
    """Mix the negatives with a shuffled copy of themselves.

    ``queue_hat = l Z + (1 - l) Z[perm]`` with ``l ~ Beta(alpha, alpha)`` in
    [0, 1] (one scalar, or one per dimension when ``per_dim``) and a fresh
    random permutation of the K rows. ``queue``: (K, D), one negative per row.
    Returns a new detached tensor; the queue passed in is never modified, so
    the trainer keeps enqueueing the un-mixed keys.
    """
    if queue.dim() != 2:
        raise ScorevizError(f"queue: need a (K, D) tensor, got shape {tuple(queue.shape)}")
    queue = queue.detach()
    shape = (queue.shape[1],) if per_dim else ()
    lam = sample_beta(alpha, shape, generator, queue.device).to(queue.dtype)
    gen_device = generator.device if generator is not None else queue.device
    perm = torch.randperm(queue.shape[0], generator=generator, device=gen_device).to(queue.device)
    return lam * queue + (1.0 - lam) * queue[perm]
