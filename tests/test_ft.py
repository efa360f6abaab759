"""scoreviz.ft: positive extrapolation and negative interpolation."""

import pytest
import torch
import torch.nn.functional as F

from scoreviz.errors import ScorevizError
from scoreviz.ft import negative_interpolation, positive_extrapolation, sample_beta

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def pos_lambda(q, k, q_hat):
    """Recover lambda from q_hat - k = lambda (q - k)."""
    return ((q_hat - k) / (q - k)).to(torch.float64)


def test_positive_score_formula_and_never_above_original():
    q, k = unit(64, 16, seed=1), unit(64, 16, seed=2)
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        q_hat, k_hat = positive_extrapolation(q, k, alpha=2.0, generator=g)
        lam = pos_lambda(q, k, q_hat)[0, 0]
        s = (q * k).sum(1)
        s_hat = (q_hat * k_hat).sum(1)
        torch.testing.assert_close(s_hat, s + 2 * lam * (1 - lam) * (1 - s))
        # the form docs/trainer.md derives: the raw score minus lambda(lambda - 1) |q - k|^2
        torch.testing.assert_close(s_hat, s - lam * (lam - 1) * ((q - k) ** 2).sum(1))
        assert (s_hat <= s + 1e-12).all()


@pytest.mark.parametrize("alpha", [0.2, 1.0, 2.0, 5.0])
def test_positive_lambda_in_1_2(alpha):
    q, k = unit(8, 4, seed=1), unit(8, 4, seed=2)
    lams = []
    for seed in range(200):
        q_hat, _ = positive_extrapolation(q, k, alpha, generator=torch.Generator().manual_seed(seed))
        lam = pos_lambda(q, k, q_hat)
        assert torch.allclose(lam, lam[0, 0])  # one lambda for the whole batch
        lams.append(lam[0, 0].item())
    lams = torch.tensor(lams)
    assert lams.min() >= 1.0 and lams.max() <= 2.0
    assert abs(lams.mean().item() - 1.5) < 0.05  # Beta(a, a) has mean 1/2


@pytest.mark.parametrize("alpha", [0.5, 1.6])
def test_negative_lambda_in_0_1(alpha):
    # With a queue of two rows the permutation is either identity or a swap;
    # a swap lets us read lambda off the output: out0 = l z0 + (1 - l) z1.
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    lams = []
    for seed in range(300):
        out = negative_interpolation(z, alpha, generator=torch.Generator().manual_seed(seed))
        if out[0, 1] != 0 or out[0, 0] != 1:  # swapped
            lams.append(out[0, 0].item())
            torch.testing.assert_close(out[0, 0] + out[0, 1], torch.tensor(1.0, dtype=torch.float64))
    lams = torch.tensor(lams)
    assert len(lams) > 50
    assert lams.min() >= 0.0 and lams.max() <= 1.0
    assert abs(lams.mean().item() - 0.5) < 0.06


def test_beta_moments():
    for alpha in (0.5, 1.6, 2.0):
        x = sample_beta(alpha, (200_000,), torch.Generator().manual_seed(0))
        assert abs(x.mean().item() - 0.5) < 0.005
        assert abs(x.var().item() - 1 / (4 * (2 * alpha + 1))) < 0.003
        assert x.min() >= 0 and x.max() <= 1


def _corr_off_diagonal(x):
    """Largest absolute correlation between two different columns of x (rows are draws)."""
    c = torch.corrcoef(x.T)
    return (c - torch.diag(torch.diag(c))).abs().max().item()


def _corr_rows(x):
    """Absolute correlation between the even and the odd rows of x, element by element."""
    return torch.corrcoef(torch.stack([x[0::2].flatten(), x[1::2].flatten()]))[0, 1].abs().item()


def test_per_dim_positive_draws_one_lambda_per_element():
    b, d = 512, 16
    q, k = unit(b, d, seed=1), unit(b, d, seed=2)
    q_hat, k_hat = positive_extrapolation(q, k, 2.0, per_dim=True, generator=torch.Generator().manual_seed(0))
    lam = pos_lambda(q, k, q_hat)
    assert lam.shape == (b, d)  # the authors' dim_mask: one lambda per sample and dimension
    assert lam.min() >= 1 and lam.max() <= 2
    assert torch.unique(lam.round(decimals=6)).numel() > 0.99 * b * d  # no draw is shared
    torch.testing.assert_close(k_hat, lam * k + (1 - lam) * q)
    # Independent across dimensions (columns) and across samples (rows): Beta(2, 2)
    # has mean 1/2 and variance 1/20 in every element, no correlation between them.
    assert abs(lam.mean().item() - 1.5) < 0.01
    assert abs(lam.var().item() - 1 / 20) < 0.005
    assert _corr_off_diagonal(lam) < 4 / b ** 0.5  # across dimensions: 16 columns of 512 draws
    assert _corr_rows(lam) < 4 / (b * d / 2) ** 0.5  # across samples: even rows against odd rows


def test_per_dim_negative_draws_one_lambda_per_element():
    k_rows, d = 1000, 16
    queue = unit(k_rows, d, seed=3)
    out = negative_interpolation(queue, 1.6, per_dim=True, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)  # the same draws, in the documented order
    lam = sample_beta(1.6, (k_rows, d), g).to(torch.float64)
    perm = torch.randperm(k_rows, generator=g)
    torch.testing.assert_close(out, lam * queue + (1 - lam) * queue[perm])
    assert lam.shape == (k_rows, d) and lam.min() >= 0 and lam.max() <= 1
    assert torch.unique(lam).numel() > 0.99 * k_rows * d  # float32 draws may rarely coincide
    assert abs(lam.mean().item() - 0.5) < 0.01
    assert abs(lam.var().item() - 1 / (4 * (2 * 1.6 + 1))) < 0.005
    assert _corr_off_diagonal(lam) < 4 / k_rows ** 0.5  # across dimensions
    assert _corr_rows(lam) < 4 / (k_rows * d / 2) ** 0.5  # across queue rows


def test_scalar_lambda_is_shared_by_every_element():
    q, k = unit(32, 16, seed=1), unit(32, 16, seed=2)
    q_hat, _ = positive_extrapolation(q, k, 2.0, per_dim=False, generator=torch.Generator().manual_seed(0))
    lam = pos_lambda(q, k, q_hat)
    torch.testing.assert_close(lam, lam[0, 0].expand_as(lam))
    queue = unit(50, 16, seed=3)
    out = negative_interpolation(queue, 1.6, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    lam = sample_beta(1.6, (), g).to(torch.float64)
    torch.testing.assert_close(out, lam * queue + (1 - lam) * queue[torch.randperm(50, generator=g)])


def test_queue_untouched_and_output_is_new():
    queue = unit(100, 8, seed=4).requires_grad_(False)
    before = queue.clone()
    out = negative_interpolation(queue, 1.6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(queue, before)
    assert out.data_ptr() != queue.data_ptr()
    out += 1  # writing to the result never reaches the queue
    assert torch.equal(queue, before)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("per_dim", [False, True])
def test_same_seed_same_output(device, per_dim):
    q, k, queue = unit(16, 8, seed=1).to(device), unit(16, 8, seed=2).to(device), unit(64, 8, seed=3).to(device)

    def draw(seed):
        g = torch.Generator(device=device).manual_seed(seed)
        return (*positive_extrapolation(q, k, 2.0, per_dim, g), negative_interpolation(queue, 1.6, per_dim, g))

    a, b, c = draw(7), draw(7), draw(8)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not torch.equal(a[0], c[0])
    assert not torch.equal(a[2], c[2])
    # A CPU generator also drives CUDA tensors.
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(negative_interpolation(queue, 1.6, per_dim, g1), negative_interpolation(queue, 1.6, per_dim, g2))


def test_gradients_reach_q_through_both_vectors_and_never_the_key():
    w_q = torch.randn(8, 8, requires_grad=True)  # stands in for the query encoder
    w_k = torch.randn(8, 8, requires_grad=True)  # stands in for the key encoder
    x = torch.randn(4, 8)
    q = F.normalize(x @ w_q, dim=1)
    k = F.normalize(x @ w_k, dim=1)
    q.retain_grad()
    gen = torch.Generator().manual_seed(0)
    q_hat, k_hat = positive_extrapolation(q, k, 2.0, generator=gen)
    lam = pos_lambda(q.detach(), k.detach(), q_hat.detach())[0, 0].to(q.dtype)

    # Through q_hat alone the gradient on q is lambda; through k_hat alone 1 - lambda.
    q_hat.sum().backward(retain_graph=True)
    torch.testing.assert_close(q.grad, torch.full_like(q, lam.item()))
    q.grad = None
    k_hat.sum().backward(retain_graph=True)
    torch.testing.assert_close(q.grad, torch.full_like(q, 1 - lam.item()))
    assert w_k.grad is None

    # A full InfoNCE loss with interpolated negatives still leaves the key encoder alone.
    queue = F.normalize(torch.randn(16, 8), dim=1)
    negs = negative_interpolation(queue, 1.6, generator=gen)
    logits = torch.cat([(q_hat * k_hat).sum(1, keepdim=True), q_hat @ negs.T], dim=1) / 0.2
    F.cross_entropy(logits, torch.zeros(4, dtype=torch.long)).backward()
    assert w_q.grad is not None and w_q.grad.abs().sum() > 0
    assert w_k.grad is None


def test_bad_input_raises():
    with pytest.raises(ScorevizError, match="alpha"):
        positive_extrapolation(unit(2, 3), unit(2, 3), 0.0)
    with pytest.raises(ScorevizError, match="q, k"):
        positive_extrapolation(unit(2, 3), unit(3, 3), 1.0)
    with pytest.raises(ScorevizError, match="queue"):
        negative_interpolation(unit(3), 1.0)
