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
