"""The registry of views: one line per view, in tab order. The page, the URL codec, the request
checks, the background reads and the report are all built from this list (app.shell.unit says
what a view declares); adding a view is one folder here and one line below."""

from app.views import curves, distribution, gradients, health, representation, waterfall

VIEWS = (
    curves.VIEW,
    distribution.VIEW,
    waterfall.VIEW,
    gradients.VIEW,
    representation.VIEW,
    health.VIEW,
)
