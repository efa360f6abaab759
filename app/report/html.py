"""Dash html components as HTML text: the report shows the app's own tables (the run table, the
health table, the table of groups) built by the same functions, with nothing of Dash around them."""

from __future__ import annotations

import html as escape

from dash.development.base_component import Component

VOID = {"br", "hr", "img", "input", "meta", "link", "col", "wbr"}
# Dash property -> HTML attribute, where they differ
ATTRIBUTES = {"className": "class", "colSpan": "colspan", "rowSpan": "rowspan", "htmlFor": "for"}


def to_html(node) -> str:
    """``node`` (a dash.html component, text, a number or a list of them) as HTML."""
    if node is None:
        return ""
    if isinstance(node, (list, tuple)):
        return "".join(to_html(child) for child in node)
    if isinstance(node, (str, int, float)):
        return escape.escape(str(node))
    described = node.to_plotly_json() if isinstance(node, Component) else {}
    if described.get("namespace") != "dash_html_components":
        raise TypeError(f"the report writes dash.html components only, not {type(node).__name__}")
    tag = described["type"].lower()
    props = described["props"]
    attributes = []
    for name, value in props.items():
        if name in ("children", "id", "n_clicks", "n_clicks_timestamp") or value is None:
            continue
        if name == "style":
            value = "; ".join(f"{_css(k)}: {v}" for k, v in value.items())
        attributes.append(f' {ATTRIBUTES.get(name, name)}="{escape.escape(str(value), quote=True)}"')
    opening = f"<{tag}{''.join(attributes)}>"
    if tag in VOID:
        return opening
    return f"{opening}{to_html(props.get('children'))}</{tag}>"


def _css(name: str) -> str:
    """A style key as CSS writes it: backgroundColor -> background-color."""
    return "".join(f"-{c.lower()}" if c.isupper() else c for c in name)
