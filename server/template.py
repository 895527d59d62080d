"""The served page of one browser session: a Panel FastListTemplate.

Header: the spec's title (lf-title) and the template's light/dark switch. Sidebar: what this
session focuses (lf-focus-state, updated on every focus change), the dataset passes' progress
(lf-progress-box), the probe box (server/probe_bar.py). Main: the banner of a spec edit that did
not check (lf-watch-error, `serve --watch`) above the grid of view cards (server/grid.py).

Each area holds one container made when the page is built; a new board (`serve --watch`) swaps
the containers' contents, since Panel templates render their areas once. docs/SERVING.md says why
FastListTemplate.
"""
from __future__ import annotations

import html

import panel as pn
import param
from panel.custom import JSComponent

from lensframe.focus import FIELDS, Focus
from lensframe.views.base import neuron_label
from lensframe.views.widgets import PatchedHTML

from .app import CSS, FOCUS_PROCESS, FOCUS_QUEUE, Page, address_follows, url_focus
from .watch import carried_focus

def without_web_font(template) -> None:
    """Drop the template design's web font (Fast asks fonts.googleapis.com for Open Sans): the
    page asks nothing of any host but the server, since a dashboard is often served where the
    internet is out of reach, and a font request would tell a third party who opened it. The
    system's own sans-serif is used instead. Set on the design class, because Panel also reads
    the font from the class while it writes the page's head (a subclass would not do: Panel finds
    the design's bundled scripts by the class's name)."""
    design = type(template._design)
    design._resources = {k: v for k, v in design._resources.items() if k != "font"}


FONT = "system-ui, -apple-system, 'Segoe UI', sans-serif"
SIDEBAR_WIDTH = 300  # px: the probe box's input and buttons fit; the grid keeps the rest
TICK_MS = 500  # how often a watched page looks for a new board or new errors

PAGE_CSS = """
.lf-title { margin: 0; font-size: 20px; font-weight: 600; color: inherit; white-space: nowrap;
            overflow: hidden; text-overflow: ellipsis; }
.lf-sidebar-head { margin: 10px 0 4px 0; font-size: 12px; font-weight: 600; text-transform: uppercase;
                   letter-spacing: .04em; opacity: .7; }
.lf-watch-error-text { color: #8a1c1c; background: #fdecea; border: 1px solid #f5c2c0; border-radius: 4px;
                       padding: 8px 12px; font-size: 13px; }
.lf-watch-error-text pre { white-space: pre-wrap; margin: 6px 0 0 0; font-size: 12px; }
.lf-watch-status { font-size: 12px; opacity: .8; }
"""

STATE_CSS = """
.lf-focus-list { display: grid; grid-template-columns: max-content 1fr; gap: 2px 10px; margin: 0;
                 font-size: 13px; }
.lf-focus-list dt { opacity: .7; }
.lf-focus-list dd { margin: 0; font-weight: 600; overflow-wrap: anywhere; }
.lf-focus-token { font-family: monospace; font-weight: 400; background: rgba(127,127,127,.15);
                  border-radius: 3px; padding: 0 3px; white-space: pre-wrap; }
"""

# The page's own CSS (outside the components' shadow roots). The header shows the title through a
# pane (lf-title) that a spec edit can change; the template's own title text is rendered once, so
# it is hidden (the template's title still names the tab). FastListTemplate's sidebar is
# calc(100vh - 76px) high plus 20 px of padding under a 64 px header: 8 px taller than the window,
# so the whole page scrolled by 8 px; 84 px makes it end at the window's bottom.
TEMPLATE_CSS = """
#header a.title { display: none; }
#sidebar { height: calc(100vh - 84px); }
"""


class TabTitle(JSComponent):
    """Sets the browser tab's title, which the template writes once into the page's <title>, so
    an edited spec's title reaches the tab too."""

    title = param.String(default="")

    _esm = """
    export function render({ model }) {
      const set = () => { if (model.title) { document.title = model.title } }
      set()
      model.on('title', set)
    }
    """


class FocusState:
    """The sidebar's account of this session's focus: sample or probe, position (with its token),
    layer, head, neuron (neuron_label), model, clusters and the probe set. Its text is patched
    alone (PatchedHTML) on each change."""

    def __init__(self, board, focus: Focus):
        self.board, self.focus = board, focus
        self.pane = PatchedHTML(self.html(), stylesheets=[STATE_CSS], sizing_mode="stretch_width",
                                css_classes=["lf-focus-state"])
        self._watcher = focus.param.watch(self._changed, list(FIELDS))

    def _changed(self, *_):
        self.pane.object = self.html()

    def stop(self) -> None:
        self.focus.param.unwatch(self._watcher)

    def html(self) -> str:
        f = self.focus
        rows = []
        if len(self.board.spec.models) > 1 or f.model:
            rows.append(("model", html.escape(str(f.model))))
        if f.text is not None:
            rows.append(("probe", html.escape(repr(f.text))))
        else:
            rows.append(("sample", str(f.sample)))
        tokens = self._tokens()
        if f.position is None:
            pos = "last token" + (f" ({len(tokens) - 1})" if tokens else "")
            index = len(tokens) - 1 if tokens else None
        else:
            pos, index = str(f.position), f.position
        if tokens and index is not None and 0 <= index < len(tokens):
            pos += f" <span class='lf-focus-token'>{html.escape(tokens[index])}</span>"
        rows.append(("position", pos))
        rows.append(("layer", "view default" if f.layer is None else str(f.layer)))
        rows.append(("head", str(f.head)))
        if f.neuron is not None:
            rows.append(("neuron", neuron_label(f.layer, f.neuron) if f.layer is not None
                         else f"index {f.neuron} (no layer focused)"))
        for name in ("cluster", "text_cluster"):
            if getattr(f, name) is not None:
                rows.append((name.replace("_", " "), str(getattr(f, name))))
        if f.probes:
            rows.append(("probe set", f"{len(f.probes)} probes"))
        items = "".join(f"<dt>{k}</dt><dd class='lf-focus-{k.replace(' ', '-')}' data-field='{k}'>{v}</dd>"
                        for k, v in rows)
        return f"<dl class='lf-focus-list'>{items}</dl>"

    def _tokens(self) -> list[str]:
        """The focused text's display tokens, when they are at hand without a forward (the stored
        tokenization, or the probe's memoized one); [] otherwise."""
        f, ex = self.focus, self.board.executor
        try:
            if f.text is not None:
                from lensframe.probes import Probe

                return list(ex.probe_tokens(f.model, Probe(f.text))["strings"])
            node = next((p.node for p in self.board.plan.of_kind("prepare", f.model) if p.node.op == "tokens"), None)
            res = self.board.result(node) if node is not None else None
            return list(res.meta["strings"][f.sample]) if res is not None else []
        except Exception:  # the summary never fails the page: the views say what is wrong
            return []


class SessionPage:
    """One session's served page on `live` (a LiveSpec): the template, its containers, and the
    Page of the board shown now. With a watched spec it checks `live` every TICK_MS and moves to a
    new board keeping this session's focus (watch.carried_focus), or shows the edit's errors."""

    def __init__(self, live, notices=(), url: bool = True):
        self.live = live
        board = live.board
        # PatchedHTML: a new title, banner or status sends its text alone, not the stylesheets again
        self.title = PatchedHTML("", sizing_mode="stretch_width", stylesheets=[PAGE_CSS])
        self.banner = PatchedHTML("", visible=False, sizing_mode="stretch_width", stylesheets=[PAGE_CSS],
                                  css_classes=["lf-watch-error"])
        self.status = PatchedHTML("", visible=False, sizing_mode="stretch_width", stylesheets=[PAGE_CSS],
                                  css_classes=["lf-watch-status"])
        self.tab = TabTitle(title=board.title, width=0, height=0, margin=0)
        self.focus_box = pn.Column(sizing_mode="stretch_width", css_classes=["lf-focus-box"])
        self.progress_box = pn.Column(sizing_mode="stretch_width")
        self.probe_box = pn.Column(sizing_mode="stretch_width")
        # stretch_both: the grid fills the main area (server/grid.py, fill=True)
        self.content = pn.Column(sizing_mode="stretch_both", stylesheets=[CSS], css_classes=["lf-app"])

        def head(text):
            return pn.pane.HTML(f"<div class='lf-sidebar-head'>{text}</div>", stylesheets=[PAGE_CSS], margin=(0, 10))

        self.template = pn.template.FastListTemplate(
            title=board.title, sidebar_width=SIDEBAR_WIDTH, main_layout=None, theme_toggle=True,
            font=FONT,
            header=[self.title, self.tab],
            sidebar=[head("Focus"), self.focus_box, self.status, self.progress_box, head("Ask the model"), self.probe_box],
            main=[pn.Column(self.banner, self.content, sizing_mode="stretch_both")],
            raw_css=[TEMPLATE_CSS])
        without_web_font(self.template)
        focus = board.new_focus()
        notices = list(notices) + (url_focus(board, focus) if url else [])
        self.page: Page | None = None
        self.state: FocusState | None = None
        self.version, self.error, self._status = live.version, None, ""
        self._show(board, live.job, focus, notices)
        self._tick_errors()
        if live.watching:
            self._tick = pn.state.add_periodic_callback(self.tick, period=TICK_MS)

    def _show(self, board, job, focus: Focus, notices) -> None:
        """Build this session's page on `board` around `focus`, replacing the one shown."""
        if self.page is not None:
            self.page.stop()
            self.state.stop()
        self.board = board
        self.page = Page(board, focus, job, notices, sidebar=True, focus_queue=FOCUS_QUEUE["value"],
                         focus_process=FOCUS_PROCESS["value"])
        self.state = FocusState(board, focus)
        self.title.object = f"<h1 class='lf-title'>{html.escape(board.title)}</h1>"
        self.tab.title = board.title
        self.focus_box.objects = [self.state.pane]
        self.progress_box.objects = [self.page.progress] if self.page.progress is not None else []
        self.probe_box.objects = [self.page.probe_bar]
        self.content.objects = [self.page.grid]
        address_follows(focus, board.new_focus().values())

    @property
    def focus(self) -> Focus:
        return self.page.focus

    def tick(self) -> None:
        """A watched page: move to a new board, show or clear the latest edit's errors."""
        live = self.live
        if live.version != self.version:
            self.version = live.version
            focus, notes = carried_focus(self.board, live.board, self.page.focus)
            self._show(live.board, live.job, focus, notes)
        self._tick_errors()
        if live.status != self._status:
            self._status = live.status
            self.status.object = f"<div class='lf-watch-status-text'>{html.escape(live.status)}…</div>"
            self.status.visible = bool(live.status)

    def _tick_errors(self) -> None:
        error = self.live.error
        if error == self.error:
            return
        self.error = error
        if error is None:
            self.banner.object, self.banner.visible = "", False
            return
        self.banner.object = (f"<div class='lf-watch-error-text'><b>{html.escape(self.live.path.name)} does not "
                              f"check</b>: the dashboard below is its last valid version. Save a fixed spec to "
                              f"update it.<pre>{html.escape(error)}</pre></div>")
        self.banner.visible = True
