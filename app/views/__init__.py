"""The registry of views: one line per view, in tab order. The page, the URL codec, the request
checks, the background reads and the report are all built from this list (app.shell.unit says
what a view declares); adding a view is one folder here and one line below."""

from importlib import import_module

VIEWS = tuple(import_module(f"app.views.{name}").VIEW for name in (
    "curves",
    "distribution",
    "waterfall",
    "gradients",
    "representation",
    "health",
    "compare",
))
