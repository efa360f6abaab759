"""The shape of app/ that issue 21 asks for, checked so that it stays: small modules, the data access
without figure code, the server's checks without the rest of app/, no private names across modules."""

import ast
import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 400  # "no module under app/ over ~400 lines"


def modules_after_import(python, env, *names) -> dict:
    """{"app": [the app.* modules], "other": [plotly, dash]} loaded by importing ``names`` in a fresh
    interpreter (this one has imported everything already)."""
    code = ("import importlib, json, sys\n"
            f"for name in {list(names)!r}:\n    importlib.import_module(name)\n"
            "mods = sorted(sys.modules)\n"
            "print(json.dumps({'app': [m for m in mods if m == 'app' or m.startswith('app.')],\n"
            "                  'other': [m for m in mods if m.split('.')[0] in ('plotly', 'dash')]}))\n")
    out = subprocess.run([python, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_no_module_of_app_is_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "app").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_the_data_access_imports_no_figure_code(python, subprocess_env):
    """app.runs reads and reduces (app.plot.reduce: numpy and pandas); it never imports plotly, dash,
    a view or a figure helper."""
    loaded = modules_after_import(python, subprocess_env, "app.runs", "app.runs.reads", "app.runs.background")
    assert loaded["other"] == []
    assert [m for m in loaded["app"] if not m.startswith("app.runs")] == ["app", "app.plot", "app.plot.reduce"]


def test_the_server_side_checks_import_nothing_else_of_app(python, subprocess_env):
    server = sorted(f"app.server.{p.stem}" for p in (ROOT / "app" / "server").glob("*.py") if p.stem != "__init__")
    loaded = modules_after_import(python, subprocess_env, *server)
    assert loaded["other"] == []
    assert [m for m in loaded["app"] if not m.startswith("app.server")] == ["app"]


def test_no_module_uses_another_modules_private_names():
    """Neither ``from app.x import _name`` nor ``x._name`` on a module of app/ or scoreviz/: what a
    module shares is public, with a docstring."""
    ours = ("app", "scoreviz")
    found = []
    for path in [*(ROOT / "app").rglob("*.py"), *(ROOT / "scoreviz").rglob("*.py")]:
        tree = ast.parse(path.read_text())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] in ours):
                for alias in node.names:
                    imported.add(alias.asname or alias.name)
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {alias.name}")
            elif isinstance(node, ast.Import):
                imported.update(a.asname or a.name.split(".")[0] for a in node.names if a.name.split(".")[0] in ours)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in imported
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert found == []
