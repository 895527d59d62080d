"""The View contract: declared params, needs (graph nodes), focus reads/sets, and render.

A view never runs a model: it asks for Nodes, and at render time reads their results through a
ViewContext. Panel is imported only inside render methods (and lensframe.views.widgets), so the
spec validator and the compiler can use view classes without importing Panel.
"""
from __future__ import annotations

import html
import inspect
from pathlib import Path
from typing import ClassVar, Optional

from pydantic import BaseModel, ConfigDict, Field

from lensframe.graph import Node


class Pin(BaseModel):
    """Focus fields fixed for one view (e.g. two attention views pinned to different heads)."""

    model_config = ConfigDict(extra="forbid")
    model: Optional[str] = None
    sample: Optional[int] = Field(None, ge=0)
    position: Optional[int] = Field(None, ge=0)
    layer: Optional[int] = Field(None, ge=0)
    head: Optional[int] = Field(None, ge=0)
    neuron: Optional[int] = Field(None, ge=0)
    cluster: Optional[int] = Field(None, ge=0)
    text_cluster: Optional[int] = Field(None, ge=0)


class ViewParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: Optional[str] = Field(None, description="which model of the spec (default: the first)")
    title: Optional[str] = Field(None, description="card title (default: the view id)")
    pin: Pin = Field(default_factory=Pin, description="focus fields fixed for this view")


class View:
    type: ClassVar[str] = ""
    Params: ClassVar[type[ViewParams]] = ViewParams
    reads: ClassVar[tuple[str, ...]] = ()
    sets: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    model_params: ClassVar[tuple[str, ...]] = ()  # params that name another model of the spec (validated)

    def __init__(self, id: str, params: ViewParams, model: str):
        self.id, self.p, self.model = id, params, model
        self.info = None  # the model's ModelInfo (shapes from its config), set by the Board
        self.infos: dict = {}  # every model's ModelInfo by name, set by the Board

    default_title: ClassVar[str] = ""

    @property
    def title(self) -> str:
        if self.p.title:
            return self.p.title
        title = self.default_title or self.id
        return f"{title} · {self.model}" if len(self.infos) > 1 else title  # which model, when there are several

    def tokens_node(self, max_tokens: int) -> Node:
        return Node.make("tokens", self.model, max_tokens=max_tokens)

    def needs(self, max_tokens: int) -> list[Node]:
        return []

    def check(self, info) -> list[tuple[tuple, str, str | None]]:
        """Capability problems as (param path, message, hint), found before weights load."""
        issues = []
        if self.p.pin.layer is not None and self.p.pin.layer >= info.n_layers:
            issues.append((("pin", "layer"), *beyond_depth(self.p.pin.layer, info)))
        if self.p.pin.head is not None and self.p.pin.head >= info.n_heads:
            issues.append((("pin", "head"), f"head {self.p.pin.head} is out of range "
                           f"({info.n_heads} heads: 0..{info.n_heads - 1})", None))
        return issues

    def check_views(self, views: dict, max_tokens: int) -> list[tuple[tuple, str, str | None]]:
        """Problems with how this view relates to the spec's other views (all checked first alone)."""
        return []

    def check_data(self, dataset) -> list[tuple[tuple, str, str | None]]:
        """Problems with the dataset (e.g. a label the view names that it lacks), before weights load."""
        return []

    def render(self, ctx):
        raise NotImplementedError

    # --- lensframe export (docs/WRITING_VIEWS.md, "Exporting") ---------------------------------
    # A view that can live in a static page names its JS port (a file beside its module) and ships
    # what the port needs to redraw it for any exported focus (export_data), with its size planned
    # from shapes (export_size). Any other view is a note card in the exported page saying why.
    export_script: ClassVar[Optional[str]] = None
    export_note: ClassVar[str] = ""  # why it is not exported, after "this <type> view" (default: no JS port)
    export_by_layer: ClassVar[bool] = False  # its data grows with the exported layers (--layers)
    export_by_neuron: ClassVar[bool] = False  # its data grows with the exported neurons (--neurons)
    export_webgl: ClassVar[bool] = False  # it draws a HoloViews plot (WebGL): the page keeps bokeh-gl
    # JSComponent classes of its own it brings to the page, with their module's and stylesheets' bytes
    # (once per page, whichever views use them), e.g. {"ClusterLegend": 14_000}
    export_components: ClassVar[dict] = {}

    def export_refusal(self) -> str:
        """Why this view is a note in an exported page ("" when it exports)."""
        if self.export_script is not None:
            return ""
        return self.export_note or ("has no JS port yet, so an exported page cannot redraw it "
                                    "(lensframe serve shows this view)")

    def export_script_path(self) -> Path:
        return Path(inspect.getfile(type(self))).parent / self.export_script

    def export_data(self, ex):
        """What the JS port reads (lensframe.export_pack.ExportData), for ex.samples; ex is an
        ExportContext. Called after the page's first render, so ex.rendered holds its parts."""
        raise NotImplementedError

    def export_parts(self, ctx) -> dict:
        """Components the port reads besides ctx's named parts, as {name: (component, events)}:
        e.g. a map kept with ctx.keep. `events`: Bokeh UI events of the component's model (a
        plot's "tap", "selectiongeometry") that reach the port's click["<name>.<event>"] with
        {x, y, final}."""
        return {}

    def export_neurons(self, ex) -> dict[int, list[int]]:
        """Neurons (layer -> indices) a click in this view can focus, beyond those the neuron
        views list: the neurons view of the page holds their activations too."""
        return {}

    def export_neuron_count(self, shapes) -> int:
        """How many neurons export_neurons names at most, from shapes (for the neurons view's plan)."""
        return 0

    def export_size(self, shapes) -> dict[str, int]:
        """Planned bytes in the page by part (its data and its first render), from
        lensframe.export_plan.ExportShapes, without reading any result but the token counts."""
        raise NotImplementedError


LIVE_MODEL_NOTE = ("runs the model on what you type or click, so it needs a live model: "
                   "lensframe serve shows this view")
RUNTIME_JS = Path(__file__).parent / "js" / "runtime.js"


class ComparesModels:
    """For a view of two versions of one model (model_diff, edit_search): `other`, the reference
    (the base, before the edit; default: the spec's other model), their weight diff, and the checks
    that the pair can be compared. Mixed into a View whose Params have `other`."""

    @property
    def other(self) -> str | None:
        if self.p.other:
            return self.p.other
        return next((name for name in self.infos if name != self.model), None)

    def weights_node(self) -> Node:
        return Node.make("weight_diff", self.model, other=self.other)

    def pair_issues(self, info, missing: tuple[str, str]) -> list[tuple[tuple, str, str | None]]:
        """What stops the comparison: no other model (`missing`: message and hint), the model
        compared with itself, or two models of different shapes."""
        if self.other is None:
            return [((), *missing)]
        if self.other == self.model:
            return [(("other",), f"compares model {self.model!r} with itself", "name the other model (the base)")]
        theirs = self.infos.get(self.other)
        shape = lambda i: (i.family, i.n_layers, i.d_model, i.d_mlp, i.n_heads, i.vocab_size)  # noqa: E731
        if theirs is not None and shape(info) != shape(theirs):
            return [(("other",), f"models {self.model!r} and {self.other!r} differ in shape ({shape(info)} vs "
                     f"{shape(theirs)}): {self.type} compares two versions of one model", None)]
        return []


def beyond_depth(layer: int, info) -> tuple[str, None]:
    """The (message, hint) of a layer the model does not have."""
    return f"layer {layer} is beyond the model's depth ({info.n_layers} layers: 0..{info.n_layers - 1})", None


def esc(value) -> str:
    """HTML-escape any value for the captions views write."""
    return html.escape(str(value))


VIEW_CSS = """
:host { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; font-size: 12px; }
.lf-sub { color: #555; font-weight: 600; margin: 6px 0 2px; }
.lf-hint, .lf-waiting { color: #666; font-style: italic; padding: 8px; }
.lf-chip { display: inline-block; white-space: pre; font-family: ui-monospace, monospace; background: #eef3fb; color: #1d2330;
           border-radius: 3px; padding: 0 4px; margin: 1px 2px; }
.lf-chip small { color: #777; }
.lf-promoted .lf-chip { background: #e3f1e3; }
.lf-suppressed .lf-chip { background: #fbe9e7; }
.lf-example-head { color: #555; margin-top: 6px; }
.lf-edit-result table { border-collapse: collapse; font-family: ui-monospace, monospace; }
.lf-edit-result td, .lf-edit-result th { padding: 1px 8px; text-align: right; }
.lf-edit-result td:first-child { text-align: left; }
.lf-lens-differs td { background: #fff4d6; color: #1d2330; }
.lf-chip.lf-up { background: #e3f1e3; }
.lf-chip.lf-down { background: #fbe9e7; }
.lf-error { color: #8a1c1c; background: #fdecea; border: 1px solid #f5c2c0; border-radius: 4px;
            padding: 8px; overflow: auto; max-height: 100%; }
"""


def html_pane(text: str = "", **params):
    """An HTML pane with the views' shared stylesheet (styles don't cross Panel's shadow roots)."""
    import panel as pn

    return pn.pane.HTML(text, stylesheets=[VIEW_CSS], **params)


def html_part(ctx, name: str, text: str, visible: bool = True, **params):
    """html_pane kept across focus changes (ctx.part): later renders only change its text and
    whether it is shown (a part shown only sometimes stays in its layout, hidden)."""
    from .widgets import PatchedHTML

    return ctx.part(name, PatchedHTML, object=text, visible=visible, init={"stylesheets": [VIEW_CSS], **params})


def html_slot(ctx, name: str, **params):
    """An HTML part whose text (and visibility) a view sets itself after the render, e.g. from a
    draw() that a polled job calls again: made empty and hidden once, never reset by a later
    render, so a render does not send an empty text and then the same text again."""
    from .widgets import PatchedHTML

    return ctx.part(name, PatchedHTML, init={"object": "", "visible": False, "stylesheets": [VIEW_CSS],
                                             "sizing_mode": "stretch_width", **params})


def layout_part(ctx, name: str, *objects, cls=None, **params):
    """A Column (or `cls`) kept across focus changes, holding `objects`: a render that returns
    the same components in the same layout changes nothing in the page."""
    import panel as pn

    return ctx.part(name, cls or pn.Column, objects=list(objects), init=params)


def neuron_label(layer: int, index: int) -> str:
    """How every view writes a neuron's id: L7/N808 (layer 7, index 808), which cannot be read
    as the number 7.808 beside activation values."""
    return f"L{layer}/N{index}"
