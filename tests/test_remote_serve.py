"""`scoreviz serve s3://...` in headless Chromium: moto's S3 server on 127.0.0.1, the real CLI in a
child process (credentials from the environment), the real page. Runs recorded to the bucket are
listed and drawn, and a run that appears while the page is open is listed at a later refresh."""

import os
import subprocess
import sys

import pytest
import torch

from scoreviz import Recorder

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def test_serve_on_an_s3_prefix_draws_its_runs_and_shows_new_ones(s3, bucket, tmp_path, subprocess_env):
    browser = pytest.importorskip("test_app_browser")  # skips without Chromium, as the other browser tests
    env = {**subprocess_env, **s3.env(), "SCOREVIZ_CACHE_DIR": str(tmp_path / "server-cache")}
    with socket_port() as port:  # the server starts first: its imports take longest, and the runs are
        server = subprocess.Popen([sys.executable, "-m", "scoreviz.cli", "serve", f"s3://{bucket}/sweep/",
                                   "--port", str(port), "--refresh", "1"], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)  # listed at its refreshes anyway
    try:
        for name, m in (("m0.9", 0.9), ("m0.99", 0.99)):
            with Recorder(f"s3://{bucket}/sweep/{name}", config={"moco_m": m}, storage_options=s3.options()) as rec:
                for step in range(30):
                    rec.log_scores(step, torch.full((8,), m * (step + 1) / 30), torch.zeros(8, 16))
        with browser.chromium() as driver:  # Chromium starts while the server is still starting
            line = server.stdout.readline()
            assert "serving" in line, (line, server.stderr.read() if server.poll() is not None else "")
            # the console and the page name the URL given, not the local copy's folder
            assert f"serving s3://{bucket}/sweep on " in line and "server-cache" not in line, line
            url = f"http://127.0.0.1:{port}/"
            driver.get(url + "?runs=m0.9&runs=m0.99&stats=pos_mean")
            browser.wait_for(driver, browser.page_ready)
            assert driver.find_element("css selector", ".runs-dir").text == f"runs in s3://{bucket}/sweep"
            browser.wait_for(driver, lambda d: len(browser.traces(d, "curves-graph") or []) == 2,
                             message="the two runs drawn")
            assert sorted(t["name"] for t in browser.traces(driver, "curves-graph")) == ["m0.9", "m0.99"]
            # a run recorded to the prefix while the page is open: listed at a later refresh
            with Recorder(f"s3://{bucket}/sweep/late", config={"moco_m": 0.5}, storage_options=s3.options()) as rec:
                rec.log_scores(0, torch.full((8,), 0.5), torch.zeros(8, 16))
            browser.wait_for(driver, lambda d: "late" in " ".join(browser.table_rows(d)), timeout=60,
                             message="the new run listed")
            assert browser.console_errors(driver) == []
    finally:
        server.terminate()
        server.wait(30)


def test_the_page_names_a_url_without_its_credentials(tmp_path):
    from app import create_app, describe_runs

    assert describe_runs(["s3://AKIAKEY:s3cr3t@bucket/sweep/", tmp_path]) == f"s3://bucket/sweep, {tmp_path}"
    page = str(create_app(tmp_path, warm=False, label=describe_runs("gs://user:s3cr3t-pw@b/runs")).layout)
    assert "runs in gs://b/runs" in page and "s3cr3t" not in page and str(tmp_path) not in page


class socket_port:
    """A free port of 127.0.0.1 (released before the server binds it)."""

    def __enter__(self):
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return probe.getsockname()[1]

    def __exit__(self, *exc):
        return False
