"""log_logits in every layout (scoreviz.logits) against a numpy reference built from each row's own
positives and negatives; a square matrix without positives= is refused; the README's in-batch
line records the true diagonal mean (issue 22: it recorded 0.07 for a diagonal of 0.976)."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scoreviz import Recorder, ScorevizError, open_run

T = 0.1
B = 12
COLUMNS = ["pos_count", "pos_mean", "pos_var", "pos_min", "pos_max", "neg_count", "neg_mean", "neg_var", "neg_min",
           "neg_max", "neg_sample_var", "margin", "hard_frac", "pos_nonfinite", "neg_nonfinite", "neg_out_of_range"]


def views(n=B, dim=16, noise=0.4, seed=0):
    g = torch.Generator().manual_seed(seed)
    z1 = F.normalize(torch.randn(n, dim, generator=g), dim=1)
    return z1, F.normalize(z1 + noise * torch.randn(n, dim, generator=g), dim=1)


def reference(rows):
    """The statistics from [(that row's positives, that row's negatives)] (numpy float64 scores)."""
    pos = np.concatenate([p for p, _ in rows])
    neg = np.concatenate([n for _, n in rows])
    both = [(p, n) for p, n in rows if len(p) and len(n)]
    margins = np.array([p.min() - n.max() for p, n in both])
    return {"pos_count": len(pos), "pos_mean": pos.mean(), "pos_var": pos.var(), "pos_min": pos.min(),
            "pos_max": pos.max(), "neg_count": len(neg), "neg_mean": neg.mean(), "neg_var": neg.var(),
            "neg_min": neg.min(), "neg_max": neg.max(),
            "neg_sample_var": np.mean([n.var() for _, n in rows if len(n)]),
            "margin": margins.mean(), "hard_frac": (margins < 0).mean(),
            "pos_nonfinite": 0, "neg_nonfinite": 0, "neg_out_of_range": 0}


def recorded(tmp_path, logits, **layout):
    with Recorder(tmp_path) as rec:
        rec.log_logits(0, logits, T, **layout)
    return open_run(tmp_path).scores().loc[0]


def check(row, expected):
    # rows on both sides of the margin, so that hard_frac and margin can be wrong either way
    assert 0 < expected["hard_frac"] < 1
    for column in COLUMNS:
        assert row[column] == pytest.approx(expected[column], rel=1e-5, abs=1e-6), column


def cosines(a, b):
    return (a.double() @ b.double().T).numpy()


def test_moco_first_column(tmp_path):
    q, k = views()
    queue = F.normalize(torch.randn(40, 16, generator=torch.Generator().manual_seed(1)), dim=1)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], dim=1) / T
    pos, neg = np.einsum("ij,ij->i", q.double().numpy(), k.double().numpy()), cosines(q, queue)
    check(recorded(tmp_path, logits), reference([(pos[i:i + 1], neg[i]) for i in range(B)]))


@pytest.mark.parametrize("extra", [0, 5], ids=["(B, B)", "(B, B + hard negatives)"])
def test_in_batch_diagonal(tmp_path, extra):
    z1, z2 = views(noise=0.6)  # a third of the rows hard
    hard = F.normalize(torch.randn(extra, 16, generator=torch.Generator().manual_seed(2)), dim=1)
    candidates = torch.cat([z2, hard])
    logits = z1 @ candidates.T / T
    s = cosines(z1, candidates)
    rows = [(s[i, i:i + 1], np.delete(s[i], i)) for i in range(B)]
    check(recorded(tmp_path, logits, positives="diagonal"), reference(rows))


def test_ntxent_leaves_each_rows_self_similarity_out(tmp_path):
    """SimCLR's (2B, 2B): both views stacked, the diagonal masked as the loss masks it (-1e9 here:
    neither counted nor out of range), row i's positive at i + B (i - B in the second half)."""
    z = torch.cat(views())
    logits = z @ z.T / T
    logits.fill_diagonal_(-1e9)
    s = cosines(z, z)
    n = 2 * B
    rows = [(s[i, [(i + B) % n]], np.delete(s[i], sorted([i, (i + B) % n]))) for i in range(n)]
    check(recorded(tmp_path, logits, positives="ntxent"), reference(rows))


def test_a_positives_mask_supcon(tmp_path):
    """SupCon: both views of B samples with 4 labels; positives the same label, the row's own
    sample ignored; the margin takes each row's weakest positive. The samples gather around their
    label's centre, loosely enough that half the rows are hard."""
    g = torch.Generator().manual_seed(3)
    labels = torch.arange(2 * B) % 4
    centres = F.normalize(torch.randn(4, 16, generator=g), dim=1)
    z = F.normalize(centres[labels] + 0.2 * torch.randn(2 * B, 16, generator=g), dim=1)
    mask = labels[:, None] == labels[None, :]
    logits = z @ z.T / T
    s, m = cosines(z, z), mask.numpy()
    rows = [(s[i][m[i] & (np.arange(2 * B) != i)], s[i][~m[i]]) for i in range(2 * B)]
    check(recorded(tmp_path, logits, positives=mask, ignore="diagonal"), reference(rows))


def test_a_positives_mask_on_rectangular_logits_needs_no_ignore(tmp_path):
    """Rows with two positives each among (B, 2B) candidates; a row without a negative, and a
    non-finite entry, counted as such."""
    z1, z2 = views()
    candidates = torch.cat([z2, F.normalize(z2 + 0.1, dim=1)])
    mask = torch.zeros(B, 2 * B, dtype=torch.bool)
    mask[torch.arange(B), torch.arange(B)] = mask[torch.arange(B), torch.arange(B) + B] = True
    mask[0] = True  # row 0: no negative, so neither in the margin nor in neg_sample_var
    logits = z1 @ candidates.T / T
    logits[1, 5] = float("nan")  # a negative
    s, m = cosines(z1, candidates), mask.numpy()
    negatives = ~m
    negatives[1, 5] = False  # left out, counted as non-finite
    expected = reference([(s[i][m[i]], s[i][negatives[i]]) for i in range(B)])
    expected["neg_nonfinite"] = 1
    with pytest.warns(RuntimeWarning, match="1 non-finite neg scores"):
        check(recorded(tmp_path, logits, positives=mask), expected)


def test_square_logits_without_positives_are_refused_naming_the_argument_and_the_layouts(tmp_path):
    z1, z2 = views()
    with Recorder(tmp_path) as rec:
        with pytest.raises(ScorevizError, match="square.*positives=.*'first'.*'diagonal'.*'ntxent'.*bool mask"):
            rec.log_logits(0, z1 @ z2.T / T, T)
        with pytest.raises(ScorevizError, match="ignore="):  # a square mask must say what its diagonal is
            rec.log_logits(0, z1 @ z2.T / T, T, positives=torch.eye(B, dtype=torch.bool))
        rec.log_logits(1, z1 @ z2.T / T, T, positives="first")  # said explicitly: MoCo's with K = B - 1
    assert list(open_run(tmp_path).scores().index) == [1]  # nothing recorded by the refused calls


def test_the_readmes_in_batch_line_records_the_true_diagonal_mean(tmp_path):
    """The in-batch line of the README's loop snippets, run on CLIP-like (B, B) logits."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    snippets = "".join(re.findall(r"```python\n(.*?)```", readme, re.S))
    [line] = [text for text in snippets.splitlines() if 'positives="diagonal"' in text]
    code = line.split("#")[1] if line.lstrip().startswith("#") else line.split("#")[0]
    z1, z2 = views(n=64, dim=32, noise=0.03)
    logits, temperature = z1 @ z2.T / T, T
    rec = Recorder(tmp_path)
    exec(code.strip(), {"rec": rec, "step": 0, "logits": logits, "temperature": temperature})
    rec.close()
    scores = open_run(tmp_path).scores().loc[0]
    diagonal = (z1 * z2).sum(1)
    assert diagonal.mean() > 0.9  # the positives: well aligned (issue 22's example: 0.976)
    assert scores["pos_mean"] == pytest.approx(diagonal.mean().item(), rel=1e-5)
    assert scores["pos_count"] == 64 and scores["hard_frac"] < 0.1
