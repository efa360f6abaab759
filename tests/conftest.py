import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The app's header index (app.headers) goes to a folder of this test session, never ~/.cache;
# child processes inherit it.
os.environ["SCOREVIZ_CACHE_DIR"] = tempfile.mkdtemp(prefix="scoreviz-test-cache-")


@pytest.fixture
def subprocess_env():
    """Environment for child Python processes: the checkout importable, one thread each."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@pytest.fixture
def python():
    return sys.executable


@pytest.fixture(scope="session")
def s3_servers():
    """moto's S3 servers on 127.0.0.1 (tests/s3_server.py), one per test session each: one that
    takes any keys and one that checks them, launched side by side (each imports moto for
    seconds) when a test first asks for either."""
    pytest.importorskip("s3fs")
    import s3_server

    servers = {"any keys": s3_server.launch(), "checked": s3_server.launch(check_credentials=True)}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="session")
def s3(s3_servers):
    """The S3 server that takes any keys; each test makes its own bucket."""
    return s3_servers["any keys"].ready()


@pytest.fixture(scope="session")
def checked_s3(s3_servers):
    """The S3 server that checks credentials (moto's INITIAL_NO_AUTH_ACTION_COUNT)."""
    return s3_servers["checked"].ready()


@pytest.fixture
def bucket(s3, request):
    """A new bucket on the session's S3 server, named after the test."""
    import re

    name = "sv-" + re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    s3.make_bucket(name)
    return name
