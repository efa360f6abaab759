"""`scoreviz export RUNS... --group-by KEY`: the grouped HTML report, through the real CLI."""

import re

import numpy as np
import pandas as pd
import pytest

from scoreviz import cli
from sweep_runs import write_run


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """moco_m 0.9 (3 seeds) and 0.99 (2 seeds) in one folder, values known: m + seed / 10 + step / 100."""
    root = tmp_path_factory.mktemp("report-sweep")
    steps = np.arange(0, 40, 4)
    for m, seeds in ((0.9, (0, 1, 2)), (0.99, (0, 1))):
        for seed in seeds:
            write_run(root / "sweep" / f"m{m}-s{seed}", {"moco_m": m, "seed": seed}, steps,
                      m + seed / 10 + steps / 100, scalars={"loss": 5 - steps / 10 - seed})
    return root / "sweep"


def export(*args):
    return cli.main(["export", *map(str, args)])


def test_the_grouped_report_is_one_offline_file_with_the_groups_and_their_counts(sweep, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert export(sweep, "--group-by", "moco_m", "--stat", "neg_mean", "--stat", "loss", "--out", out) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    text = out.read_text()
    # self-contained: no script or stylesheet fetched from anywhere
    assert not re.search(r"<script[^>]+src=[\"']?(https?:)?//", text)
    assert not re.search(r"<link[^>]+href=[\"']?(https?:)?//", text)
    assert text.count("<script type=\"text/javascript\">/**") <= 1 and "plotly.js v" in text
    for name in ("moco_m=0.9 (n=3)", "moco_m=0.99 (n=2)"):  # in the legends of the figures
        assert name in text
    assert "3D waterfall" in text and "Mean histograms at the last step" in text
    # the table of groups: values, run counts, each statistic's final mean +- std (pandas over the runs)
    table = text[text.index('<table class="runs groups">'):]
    table = table[:table.index("</table>")]
    cells = [re.sub("<[^>]+>", "", c) for c in re.findall(r"<td>(.*?)</td>", table)]
    assert cells[:2] == ["0.9", "3"] and cells[4:6] == ["0.99", "2"]
    last = pd.DataFrame({"neg": [0.9 + s / 10 + 0.36 for s in (0, 1, 2)], "loss": [5 - 3.6 - s for s in (0, 1, 2)]})
    assert cells[2] == f"{last['neg'].mean():.4g} \u00b1 {last['neg'].std():.2g}"
    assert cells[3] == f"{last['loss'].mean():.4g} \u00b1 {last['loss'].std():.2g}"


def test_several_keys_and_a_minmax_band(sweep, tmp_path):
    out = tmp_path / "r.html"
    assert export(*sorted(sweep.iterdir()), "--group-by", "moco_m", "--group-by", "seed", "--band", "minmax",
                  "--out", out) == 0
    text = out.read_text()
    assert "moco_m=0.9, seed=2 (n=1)" in text and "[min, max]" in text


@pytest.mark.parametrize("args, message", [
    (["--group-by", "momentum"], "--group-by momentum: no run has this config key (their keys: moco_m, seed)"),
    (["--group-by", "moco_m", "--stat", "nonsense"], "--stat nonsense: no run recorded it"),
])
def test_a_bad_key_or_statistic_is_a_clear_error(sweep, tmp_path, capsys, args, message):
    out = tmp_path / "r.html"
    assert export(sweep, *args, "--out", out) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("scoreviz: error: ") and message in err and "Traceback" not in err
    assert not out.exists()


def test_no_runs_and_unwritable_paths_are_clear_errors(sweep, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert export(empty, "--group-by", "moco_m", "--out", tmp_path / "r.html") == 1
    assert str(empty) in capsys.readouterr().err
    assert export(sweep, "--group-by", "moco_m", "--out", tmp_path / "missing" / "r.html") == 1
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "taken.html").write_text("keep")
    assert export(sweep, "--group-by", "moco_m", "--out", tmp_path / "taken.html") == 1
    assert "--force" in capsys.readouterr().err and (tmp_path / "taken.html").read_text() == "keep"


def test_group_options_without_group_by_are_refused(sweep, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        export(sweep, "--band", "sem", "--out", tmp_path / "r.html")
    assert exit_info.value.code == 2 and "need --group-by" in capsys.readouterr().err


def test_help_describes_the_grouped_report(capsys):
    with pytest.raises(SystemExit):
        cli.main(["export", "--help"])
    text = capsys.readouterr().out
    for option in ("--group-by KEY", "--band", "--stat NAME", "--waterfall-stat"):
        assert option in text
