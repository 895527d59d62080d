"""`lensframe export`: the dashboard as one HTML file that opens offline, its views linked in JS.

The page is the served page's first render: server/app.py Page builds the cards on the spec's grid
(the views' components, rendered at the first exported sample or --focus; a note body for each view
that does not export). It is saved with
Bokeh's and Panel's JavaScript and every stylesheet inline (no template: the served
FastListTemplate asks 22 CDN hosts), and without favicon links, so it asks nothing of any host.

Linking happens in the browser. lensframe's runtime (views/js/runtime.js) holds the page's focus;
each exportable view's JS port (views/js/<type>.js) redraws the view's components for a focus from
the data the view exported (View.export_data), as its Python render() does; a click in a component
reaches the runtime through a Bokeh CustomJS on the component's `data_event` (what Panel's
send_msg triggers, server or not). Views that cannot export are note cards (lf-export-note).
"""
from __future__ import annotations

import html
import io
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import panel as pn

from lensframe.errors import LensframeError
from lensframe.export_pack import ExportContext
from lensframe.export_plan import ExportOptions, ExportPlan, check_fits, plan_export, ranges
from lensframe.views.base import RUNTIME_JS, VIEW_CSS

from .app import CSS, Page
from .grid import build_grid

EXPORT_CSS = """
.lf-export-info { margin: 0 8px 4px; color: #555; font-size: 12px; }
.lf-export-note { color: #555; background: #f6f6f6; border: 1px dashed #bbb; border-radius: 4px; padding: 10px;
                  font-size: 12px; }
"""
ICON_LINK = re.compile(r'<link rel="(?:apple-touch-icon|icon)"[^>]*>\n?')
# the focus fields the page's runtime holds (the selections and the probe set stay on the server)
_FOCUS_JSON = ("model", "sample", "text", "position", "layer", "head", "neuron", "cluster", "text_cluster")


@dataclass
class ExportReport:
    path: Path
    bytes: int
    plan: ExportPlan
    views: dict[str, int] = field(default_factory=dict)  # view id -> bytes in the file (data + first render)
    fixed: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def describe(self) -> str:
        from lensframe.estimate import fmt

        parts = ", ".join(f"{k} {fmt(v)}" for k, v in {**self.views, **self.fixed}.items())
        return f"wrote {self.path}: {fmt(self.bytes)} (planned {fmt(self.plan.total)}; {parts}) in {self.seconds:.1f}s"


def export(board, path, options: ExportOptions, max_bytes: int | None = None) -> ExportReport:
    """Plan, refuse over max_bytes (naming options that fit), build and write the page atomically."""
    t0 = time.perf_counter()
    plan = plan_export(board, options)
    if max_bytes is not None:
        check_fits(board, plan, options, max_bytes, str(board.spec.file))
    page, views, fixed = build_html(board, options, plan)
    if max_bytes is not None and len(page) > max_bytes:  # the plan estimates the strings: the limit holds anyway
        raise LensframeError(f"{board.spec.file}: the exported page came out at {len(page):,} bytes, over --max-mb "
                             f"({max_bytes:,} bytes; the plan said {plan.total:,}), so it was not written\n"
                             f"    hint: fewer --samples, --layers or --neurons, or a higher --max-mb")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(page)
    tmp.replace(path)
    return ExportReport(path, len(page), plan, views, fixed, time.perf_counter() - t0)


def build_html(board, options: ExportOptions, plan: ExportPlan) -> tuple[bytes, dict, dict]:
    """The page's bytes, the bytes each view takes in it, and the page's own parts' bytes."""
    from bokeh.document import Document
    from bokeh.models import CustomJS
    from panel.io.model import add_to_doc
    from panel.io.resources import set_resource_mode

    focus = board.new_focus()
    focus.update(**{"sample": options.samples[0], **options.focus})  # the page opens there
    notes = {vid: pn.pane.HTML(f"<div class='lf-export-note'>Not in this exported page: this "
                               f"{html.escape(board.views[vid].type)} view {html.escape(why)}.</div>",
                               stylesheets=[VIEW_CSS, EXPORT_CSS], sizing_mode="stretch_width",
                               css_classes=["lf-export-note-pane"]) for vid, why in plan.notes.items()}
    served = Page(board, focus, notes=notes)  # the served page's cards: the views rendered at the focus
    served.stop()  # nothing moves it: the page's runtime does
    cards, contexts = served.cards, served.contexts
    for vid, body in served.bodies.items():
        content = body.objects[0] if body.objects else None
        if {"lf-error-card"} & set(getattr(content, "css_classes", None) or []):  # a page is not shared broken
            raise LensframeError(f"{board.spec.file}: view {vid!r} ({board.views[vid].type}) failed to render: "
                                 f"{html.unescape(re.sub('<[^>]+>', '', content.object))[:500]}")
    datas = {}
    for vid, ctx in contexts.items():  # before the document is built: a view may trim its parts (text)
        view = board.views[vid]
        try:
            datas[vid] = view.export_data(ExportContext(board, view, options.samples, options, rendered=ctx))
        except LensframeError:
            raise
        except Exception as exc:
            raise LensframeError(f"{board.spec.file}: view {vid!r} ({view.type}) could not be exported: "
                                 f"{type(exc).__name__}: {exc}") from exc
    title = pn.pane.HTML(f"<h2 class='lf-title'>{html.escape(board.title)}</h2>", sizing_mode="stretch_width")
    info = pn.pane.HTML(
        f"<div class='lf-export-info'>exported page: samples {ranges(options.samples)} of "
        f"{len(board.dataset)}; a click moves the focus in this page as on the served dashboard</div>",
        stylesheets=[EXPORT_CSS], sizing_mode="stretch_width")
    grid = build_grid(board.spec.layout, cards)
    layout = pn.Column(title, info, grid, sizing_mode="stretch_width", stylesheets=[CSS], css_classes=["lf-app"])

    doc = Document()
    with set_resource_mode("inline"):
        root = layout.get_root(doc)
        add_to_doc(root, doc, True)
    doc.unhold()
    with doc.models.freeze():  # one recompute of the document's models, not one per change
        inline_stylesheets(doc)
        models, views = wire(board, contexts, root)
    doc.js_on_event("document_ready", CustomJS(args={"models": models}, code="LF.start(models)"))

    tokens = {m: export_tokens(board, m, options.samples) for m in sorted({v["model"] for v in views})}
    header = {"focus": {k: getattr(focus, k) for k in _FOCUS_JSON}, "views": views, "tokens": tokens}
    buf = io.StringIO()
    pn.io.save.save(doc, buf, resources="inline", title=board.title)
    page = ICON_LINK.sub("", buf.getvalue())  # favicons point at cdn.holoviz.org
    if not any(getattr(m, "output_backend", None) == "webgl" for m in doc.models):
        page = without_bundle(page, "bokeh-gl.min.js")  # WebGL plots only: 0.19 MB no view here draws with

    ports = [RUNTIME_JS] + sorted({board.views[vid].export_script_path() for vid in contexts})
    scripts = "".join(f"<script>\n{p.read_text(encoding='utf-8')}\n</script>\n" for p in ports)
    blocks = {vid: d.to_json() for vid, d in datas.items()}
    data = (_json_script("lf-export", json.dumps(header, ensure_ascii=False, separators=(",", ":")))
            + "".join(_json_script(f"lf-data-{vid}", text) for vid, text in blocks.items()))
    # the page's own <head> comes first; the inlined libraries hold "</body>" in strings, so the last is its own
    head, body = page.split("<head>", 1)
    before, after = body.rsplit("</body>", 1)
    page = f"{head}<head>\n{scripts}{before}{data}</body>{after}"
    out = page.encode("utf-8")

    first, components = first_render_bytes(doc, root, cards)
    views_bytes = {vid: first.get(vid, 0) + len(blocks.get(vid, "").encode()) for vid in board.views}
    tokens_b = len(json.dumps(tokens, ensure_ascii=False, separators=(",", ":")).encode())
    fixed = {"scripts": len(out) - sum(views_bytes.values()) - tokens_b - components, "components": components,
             "tokens": tokens_b}
    return out, views_bytes, fixed


def wire(board, contexts: dict, root) -> tuple[dict, list]:
    """The Bokeh models of each exported view's parts (by "view/part") and the views' entries in the
    page's header; each clickable part's data_event calls LF.click."""
    from bokeh.models import CustomJS

    from lensframe.views.widgets import _Clickable

    models, views = {}, []
    for vid, ctx in contexts.items():
        view = board.views[vid]
        parts = {}
        for name, component in ctx._parts.items():
            if not isinstance(name, str) or root.ref["id"] not in getattr(component, "_models", {}):
                continue
            model = component._models[root.ref["id"]][0]
            key = f"{vid}/{name}"
            models[key], parts[name] = model, key
            if isinstance(component, _Clickable):
                on_data_event(model, f"LF.click({json.dumps(vid)}, {json.dumps(name)}, cb_obj.data)")
        for name, (component, events) in view.export_parts(ctx).items():  # e.g. a map: a plot's gestures
            model = component._models[root.ref["id"]][0]
            key = f"{vid}/{name}"
            models[key], parts[name] = model, key
            for event in events:
                model.js_on_event(event, CustomJS(code=f"LF.click({json.dumps(vid)}, {json.dumps(f'{name}.{event}')}, "
                                                       "{x: cb_obj.x, y: cb_obj.y, final: cb_obj.final})"))
        views.append({"id": vid, "type": view.type, "model": view.model, "reads": list(view.reads),
                      "pin": {k: v for k, v in view.p.pin.model_dump().items() if v is not None}, "parts": parts})
    return models, views


def without_bundle(page: str, name: str) -> str:
    """The page without one of Bokeh's inlined bundles (its <script> element, as Bokeh writes it)."""
    begin, end = page.find(f"/* BEGIN {name} */"), page.find(f"/* END {name} */")
    if begin < 0 or end < 0:
        return page
    start = page.rfind("<script", 0, begin)
    stop = page.find("</script>", end) + len("</script>")
    return page[:start] + page[stop:]


def _json_script(id: str, text: str) -> str:
    # "</" would end the script element early (a token may be "</")
    safe = text.replace("</", "<\\/")
    return f'<script type="application/json" id="{id}">{safe}</script>\n'


def export_tokens(board, model: str, samples: list[int]) -> dict:
    """Display strings and their repr() (what captions show) of the exported samples' tokens."""
    strings = board.executor.tokens(model).meta["strings"]
    rows = [list(strings[s]) for s in samples]
    return {"index": {str(s): i for i, s in enumerate(samples)}, "strings": rows,
            "reprs": [[repr(t) for t in r] for r in rows]}


def on_data_event(model, code: str) -> None:
    """Run `code` in the page when the component calls model.send_msg(data): Panel's send_msg
    triggers a Bokeh event named data_event, whose js_event_callbacks run with no server
    (js_on_event rejects the name, so the dict is set directly). cb_obj.data is the message."""
    from bokeh.models import CustomJS

    callbacks = dict(model.js_event_callbacks)
    callbacks["data_event"] = list(callbacks.get("data_event", [])) + [CustomJS(code=code)]
    model.js_event_callbacks = callbacks


def inline_stylesheets(doc) -> None:
    """Panel points its stylesheets at cdn.holoviz.org (ImportedStyleSheet): put the files it ships
    in panel/dist inline instead, one shared model per file."""
    from bokeh.models import ImportedStyleSheet, InlineStyleSheet
    from panel.io.resources import CDN_DIST, DIST_DIR

    cache = {}
    for m in list(doc.models):
        sheets = getattr(m, "stylesheets", None)
        if not sheets:
            continue
        new = []
        for s in sheets:
            if isinstance(s, ImportedStyleSheet):
                if not s.url.startswith(CDN_DIST):
                    raise LensframeError(f"cannot put the stylesheet {s.url} inline in an exported page")
                if s.url not in cache:
                    cache[s.url] = InlineStyleSheet(css=(DIST_DIR / s.url[len(CDN_DIST):].split("?")[0])
                                                    .read_text(encoding="utf-8"))
                s = cache[s.url]
            new.append(s)
        m.stylesheets = new


def first_render_bytes(doc, root, cards) -> tuple[dict[str, int], int]:
    """Bytes of each card in the page's document JSON, less what its components' classes bring
    once per page (a JSComponent's module and stylesheets, Panel's stylesheet models: Bokeh writes
    them in full where they first occur), which is returned apart."""
    ids = {card._models[root.ref["id"]][0].id: vid for vid, card in cards.items()}
    out: dict[str, int] = {}
    shared = [0]
    size = lambda node: len(json.dumps(node, separators=(",", ":"), ensure_ascii=False, default=str).encode())  # noqa: E731

    def once(n: int, vid) -> None:
        shared[0] += n
        if vid is not None:
            out[vid] -= n

    def walk(node, vid=None) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "attributes" in node:
                if node.get("name", "").endswith("StyleSheet"):
                    once(size(node), vid)
                    return
                if vid is None and node.get("id") in ids:
                    vid = ids[node["id"]]
                    out[vid] = size(node)
                attrs = node["attributes"]
                if "esm" in attrs:  # a JSComponent's module, the same for each instance of its class
                    once(size(attrs["esm"]) + size(attrs.get("stylesheets", [])), vid)
            for v in node.values():
                walk(v, vid)
        elif isinstance(node, list):
            for v in node:
                walk(v, vid)

    walk(doc.to_json().content)
    return out, shared[0]


__all__ = ["ExportOptions", "ExportReport", "export", "build_html"]
