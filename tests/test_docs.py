"""The documentation runs: the site builds strictly, and every snippet in it works.

- `mkdocs build --strict` into a temporary folder: a broken link or anchor, a page left out of
  the navigation, a docstring mkdocstrings cannot render or a version that is not the
  changelog's latest release is a warning, and any warning fails the build.
- Every ```python block of README.md, CHANGELOG.md and docs/*.md runs, in the order of its page,
  in one namespace per page, in a fresh folder holding a few small runs made by the Recorder
  (`runs/a`, `runs/b`, `runs/sweep/...`). The names a snippet takes from the training loop around
  it (`args`, `loader`, `step`, `logits`, `temperature`, `pos`, `neg`, `z`, `z2`, `model`, `loss`,
  `lr`) are given by LOOP below, with the shapes the snippets' comments say. A block preceded by
  `<!-- snippet: NAME -->` (invisible on GitHub and on the site) runs with fixture NAME first:
  other logits, an S3 server, a small Lightning module, a Hugging Face model...; `cli` marks a
  ```sh block of cheap commands, each run (`scoreviz ...` in-process, anything else in bash).
  A fixture in DELEGATED names a test that runs those blocks itself and checks what they did.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"<!--\s*snippet:\s*([\w-]+)\s*-->")
FENCE = re.compile(r"^(`{3,})\s*([\w-]*)")


def blocks(path: Path):
    """(first line number, language, code, fixture name or None) of each fenced block of a page."""
    lines = path.read_text(encoding="utf-8").split("\n")
    fixture, i = None, 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence is None:
            marker = MARKER.search(lines[i])
            fixture = marker.group(1) if marker else fixture
            i += 1
            continue
        start, end = i + 1, i + 1
        while end < len(lines) and not lines[end].startswith(fence.group(1)):
            end += 1
        yield start + 1, fence.group(2), "\n".join(lines[start:end]), fixture
        fixture, i = None, end + 1


def runnable(path: Path) -> list:
    return [b for b in blocks(path) if b[1] == "python" or b[3] == "cli"]


# ---------------------------------------------------------------- what the snippets' pages assume

def loop(ns, tmp):
    """What a contrastive training loop has at hand when it calls the Recorder."""
    import argparse

    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    batch, dim, queue = 16, 8, 32
    q = F.normalize(torch.randn(batch, dim, generator=g), dim=1)
    k = F.normalize(q + 0.3 * torch.randn(batch, dim, generator=g), dim=1)
    negatives = F.normalize(torch.randn(queue, dim, generator=g), dim=1)
    temperature = 0.2
    model = torch.nn.Sequential(torch.nn.Linear(dim, dim), torch.nn.ReLU(), torch.nn.Linear(dim, dim))
    loss = model(q).pow(2).mean()
    loss.backward()
    ns.update(
        args=argparse.Namespace(moco_m=0.99, alpha=2.0, lr=0.03, seed=0), loader=[None] * 3, step=0,
        temperature=temperature, model=model, loss=loss.detach(), lr=0.03, z=q * 3.0, z2=k * 3.0,
        pos=(q * k).sum(1), neg=q @ negatives.T,  # (B,) positives, (B, K) negatives: cosine scores
        logits=torch.cat([(q * k).sum(1, keepdim=True), q @ negatives.T], 1) / temperature)  # MoCo (B, 1 + K)


def inbatch(ns, tmp):
    """In-batch logits (B, B): row i's positive in column i."""
    import torch.nn.functional as F

    q, k = F.normalize(ns["z"], dim=1), F.normalize(ns["z2"], dim=1)
    ns["logits"] = q @ k.T / ns["temperature"]


def ddp(ns, tmp):
    """A one-process torch.distributed job, as torchrun would start it (rank 0 of 1, gloo on CPU)."""
    import socket

    import torch.distributed as dist

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for name, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0",
                        "LOCAL_RANK": "0", "WORLD_SIZE": "1"}.items():
        ns["_restore_env"].setdefault(name, os.environ.get(name))
        os.environ[name] = value
    ns["dist"] = dist
    ns["_cleanup"].append(lambda: dist.is_initialized() and dist.destroy_process_group())


def s3(ns, tmp):
    """The test session's S3 server (conftest's `s3`) with a new bucket `my-bucket`; credentials from
    the environment, as a user's would be."""
    server = ns["_request"].getfixturevalue("s3")
    server.make_bucket("my-bucket")
    ns["_cleanup"].append(lambda: _empty_bucket(server, "my-bucket"))
    for name, value in server.env().items():
        ns["_restore_env"].setdefault(name, os.environ.get(name))
        os.environ[name] = value


def _empty_bucket(server, name):
    """Leave the session's server as it was: the bucket and what the snippets wrote in it go."""
    client = server.client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=name, Key=item["Key"])
    client.delete_bucket(Bucket=name)


def lightning_module(ns, tmp):
    """A LightningModule whose training_step returns what the callback reads (MoCo-layout logits)."""
    import lightning
    import torch
    import torch.nn.functional as F

    class Module(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(8, 8)

        def training_step(self, batch, index):
            (x,) = batch
            q = F.normalize(self.net(x), dim=1)
            k = F.normalize(self.net(x + 0.1 * torch.randn_like(x)), dim=1)
            logits = torch.cat([(q * k).sum(1, keepdim=True), q @ k.roll(1, 0).T], 1) / 0.2
            return {"loss": F.cross_entropy(logits, torch.zeros(len(x), dtype=torch.long)),
                    "logits": logits, "temperature": 0.2}

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.TensorDataset(torch.randn(32, 8))
    ns.update(lightning=lightning, module=Module(), loader=torch.utils.data.DataLoader(data, batch_size=8))


def hf_clip(ns, tmp):
    """A tiny CLIP from a config and digit-caption pairs (examples/hf_trainer_clip.py), 3 steps."""
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import hf_trainer_clip as example
    finally:
        sys.path.remove(str(ROOT / "examples"))
    from sklearn.datasets import load_digits
    from transformers import TrainingArguments

    tokenizer = example.word_tokenizer([t.format(n) for t in example.TEMPLATES for n in example.NUMBERS], length=8)
    digits = load_digits()
    ns.update(model=example.tiny_clip(tokenizer, hidden_size=16, layers=1, patch_size=4, projection_dim=8),
              args=TrainingArguments(output_dir=str(tmp / "hf"), max_steps=3, per_device_train_batch_size=16,
                                     save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True,
                                     remove_unused_columns=False),
              pairs=example.DigitCaptions(digits.data[:64], digits.target[:64], tokenizer, seed=0),
              collate=example.collate)


def sentence_model(ns, tmp):
    """A two-layer BERT sentence model and paraphrase triplets (examples/sentence_transformers_mnrl.py)."""
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import sentence_transformers_mnrl as example
    finally:
        sys.path.remove(str(ROOT / "examples"))
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import BertConfig, BertModel

    rows = example.sentence_pairs(seed=0)[:16]  # 2 batches of 8 an epoch
    tokenizer = example.word_tokenizer(rows, length=16)
    bert = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                num_attention_heads=2, max_position_embeddings=16,
                                pad_token_id=tokenizer.pad_token_id))
    bert.save_pretrained(tmp / "bert")  # sentence-transformers loads a transformer from a folder
    tokenizer.save_pretrained(tmp / "bert")
    encoder = Transformer(str(tmp / "bert"), max_seq_length=16)
    ns.update(model=SentenceTransformer(modules=[encoder, Pooling(encoder.get_embedding_dimension(), "mean")],
                                        device="cpu"),
              triplets=Dataset.from_list(rows))


# snippets another test runs as written and checks further: W&B's offline run takes tens of seconds
# to start and finish, so it is run once, where its records are read back
DELEGATED = {"wandb": ROOT / "tests" / "test_bridges_wandb.py"}
FIXTURES = {"inbatch": inbatch, "ddp": ddp, "s3": s3, "lightning": lightning_module, "hf": hf_clip,
            "sentence-transformers": sentence_model}
SLOW = {"s3", "lightning", "hf", "sentence-transformers"}  # seconds each: imports, servers


@pytest.fixture(scope="module")
def small_runs(tmp_path_factory):
    """runs/a, runs/b and a sweep (moco_m 0.9/0.99/0.999, alpha 1/2, seeds), each a few steps."""
    import scoreviz

    folder = tmp_path_factory.mktemp("doc-runs")
    ns = {}
    loop(ns, folder)
    sweep = {"a": {"moco_m": 0.99, "alpha": 2.0, "seed": 0}, "b": {"moco_m": 0.9, "alpha": 1.0, "seed": 0}}
    for m in (0.9, 0.99, 0.999):
        for seed in (0, 1):
            sweep[f"sweep/m{m}-s{seed}"] = {"moco_m": m, "alpha": 2.0, "seed": seed}
    for name, config in sweep.items():
        with scoreviz.Recorder(folder / "runs" / name, config=config) as rec:
            for step in range(6):
                rec.log_logits(step, ns["logits"] * (1 - step * config["moco_m"] / 20), ns["temperature"])
                rec.log_embeddings(step, ns["z"], ns["z2"])
                rec.log_gradients(step, ns["model"])
                rec.log_scalars(step, loss=1.0 / (step + 1), lr=0.03)
    return folder / "runs"


def run_cli(block: str):
    """Each command line of a `cli` block: `scoreviz ...` in this process, anything else in bash."""
    from scoreviz.cli import main

    for line in block.splitlines():
        argv = shlex.split(line, comments=True)
        if not argv:
            continue
        if argv[0] != "scoreviz":
            done = subprocess.run(line, shell=True, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, f"{line}\n{done.stdout}{done.stderr}"
            continue
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv[1:])
            except SystemExit as exit_:  # --help, --version
                code = exit_.code or 0
        assert code == 0, f"{line}: exit {code}\n{out.getvalue()}{err.getvalue()}"
        assert out.getvalue().strip(), f"{line}: printed nothing"


def page_params():
    params = []
    for path in PAGES:
        found = runnable(path)
        if not found:
            continue
        marks = [pytest.mark.slow] if any(b[3] in SLOW for b in found) else []
        params.append(pytest.param(path, marks=marks, id=str(path.relative_to(ROOT))))
    return params


@pytest.mark.parametrize("page", page_params())
def test_snippets_run(page, small_runs, tmp_path, monkeypatch, request):
    """Every python block (and `cli` block) of the page runs, in order, without an error."""
    shutil.copytree(small_runs, tmp_path / "runs")
    monkeypatch.chdir(tmp_path)
    ns = {"__name__": "__snippet__", "_cleanup": [], "_restore_env": {}, "_request": request}
    loop(ns, tmp_path)
    try:
        for line, lang, code, fixture in runnable(page):
            where = f"{page.relative_to(ROOT)}:{line}"
            started = time.monotonic()
            if fixture in DELEGATED:
                continue
            try:
                if fixture in FIXTURES:
                    FIXTURES[fixture](ns, tmp_path)
                if lang == "python":
                    exec(compile(code, where, "exec"), ns)
                else:
                    run_cli(code)
            except BaseException as err:  # noqa: BLE001  (the block's own error, with its place)
                pytest.fail(f"the snippet at {where} failed:\n{code}\n\n{traceback.format_exc()}", pytrace=False)
                raise err
            with open(os.environ.get("SCOREVIZ_DOCS_TIMES", os.devnull), "a") as times:  # where CI time goes
                times.write(f"{where}: {time.monotonic() - started:.1f} s\n")
    finally:
        for value in list(ns.values()):  # a snippet's Recorder left open is closed, not leaked
            if type(value).__name__ == "Recorder":
                with contextlib.suppress(Exception):
                    value.close()
        for cleanup in reversed(ns["_cleanup"]):
            with contextlib.suppress(Exception):
                cleanup()
        for name, value in ns["_restore_env"].items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def test_every_snippet_is_run():
    """A ```python block is never left out: each page with one is a case above; a fixture named
    in a marker exists."""
    for path in PAGES:
        for line, lang, code, fixture in blocks(path):
            assert fixture in FIXTURES or fixture in DELEGATED or fixture in (None, "cli"), \
                f"{path}:{line}: no fixture {fixture!r}"
    for fixture, test in DELEGATED.items():  # the test that runs those snippets does read them
        assert f'fixture == "{fixture}"' in test.read_text(encoding="utf-8"), test


@pytest.mark.slow
def test_site_builds_strictly(tmp_path):
    """`mkdocs build --strict`: no warning at all (links, anchors, nav, docstrings, version)."""
    pytest.importorskip("mkdocs")
    started = time.monotonic()
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # material's notice about its successor, not a warning of ours
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "WARNING" not in output, output
    assert (tmp_path / "site" / "api" / "index.html").is_file()
    from scoreviz import __version__

    assert f"scoreviz {__version__}" in (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    print(f"built in {time.monotonic() - started:.1f} s")


def test_version_is_one():
    """`scoreviz --version`, the package's metadata source and the changelog's latest release agree."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    hooks_version = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks_version)
    from scoreviz import __version__
    from scoreviz.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["--version"])
    assert out.getvalue().strip() == f"scoreviz {__version__}"
    assert hooks_version.latest_release() == __version__ == hooks_version.package_version()
    assert "version = attr: scoreviz.__version__" in (ROOT / "setup.cfg").read_text()


def test_readme_links_exist():
    """The README is read on GitHub, outside the site: each relative link names a file that exists."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    for link in links:
        if "://" in link:
            continue
        target, _, anchor = link.partition("#")
        assert target and (ROOT / target).exists(), f"README.md links to {link}, which does not exist"
        if anchor and target.endswith(".md"):  # a heading of that page, as the site's table of contents names it
            from markdown.extensions.toc import slugify

            headings = re.findall(r"^#+ (.+)$", (ROOT / target).read_text(encoding="utf-8"), re.M)
            assert anchor in {slugify(h, "-") for h in headings}, f"README.md links to {link}: no such heading"
