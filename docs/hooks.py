"""MkDocs hook: the site shows the package's version, which must be the changelog's latest release.

The version has one source, `scoreviz.__version__` (setup.cfg reads it too). It goes into the
site's name (every page's header and title); a CHANGELOG.md whose newest release is another
version is a warning, which `mkdocs build --strict` turns into a failure.
"""

import logging
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("mkdocs.hooks.version")


def package_version() -> str:
    """scoreviz.__version__, read from the source (importing scoreviz is not needed to build)."""
    text = (ROOT / "scoreviz" / "__init__.py").read_text(encoding="utf-8")
    return re.search(r'^__version__ = "([^"]+)"', text, re.M).group(1)


def latest_release() -> str | None:
    """The newest released version in CHANGELOG.md ('## [0.2.0] - 2026-11-29'), not 'Unreleased'."""
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    found = re.search(r"^## \[(\d[^\]]*)\]", text, re.M)
    return found.group(1) if found else None


def on_config(config):
    version = package_version()
    released = latest_release()
    if released != version:
        log.warning("scoreviz.__version__ is %s but CHANGELOG.md's latest release is %s", version, released)
    config["site_name"] = f"scoreviz {version}"
    config.setdefault("extra", {})["version"] = version
    return config
