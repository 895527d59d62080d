"""The size of an exported page (`lensframe export`), planned before anything is written.

Bytes per view come from the stored shapes (each exported sample's token count, the model's layers,
heads and vocabulary) and the options (which samples, which attention layers), through each view's
`export_size` (views/base.py); the rest is the page's fixed part: Bokeh's and Panel's JavaScript
inline (~3 MB), lensframe's runtime and the views' ports, and the shared token strings. `--max-mb`
refuses a page over the limit and names options that would fit. No Panel, no model: numpy and the
store only.
"""
from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import LensframeError
from .estimate import fmt

# Inline glue around the libraries (es-module-shims, Bokeh's loader, the page's HTML), measured on
# an export of an empty page (bokeh 3.9, panel 1.9).
PAGE_GLUE_BYTES = 45_000
# What the page inlines: these Bokeh bundles (bokeh-api and mathjax are not loaded; bokeh-gl is left
# out, no view draws with WebGL), and Panel's.
BOKEH_BUNDLES = ("bokeh.min.js", "bokeh-widgets.min.js", "bokeh-tables.min.js")


@dataclass
class ExportOptions:
    """samples: the dataset samples the page holds (its focus can move between them only);
    layers: the layers whose attention patterns, neurons and top examples it holds (None: every
    layer); focus: the focus the page opens at (fields of Focus; default: the first sample)."""

    samples: list[int]
    layers: list[int] | None = None
    focus: dict = field(default_factory=dict)


@dataclass
class ExportPlan:
    views: dict[str, int]  # view id -> planned bytes (its data and its first render)
    notes: dict[str, str]  # view id -> why it is a note in the page
    fixed: dict[str, int] = field(default_factory=dict)  # the page's own parts: scripts, tokens

    @property
    def total(self) -> int:
        return sum(self.views.values()) + sum(self.fixed.values())

    def describe(self) -> str:
        parts = [f"{vid} {fmt(n)}" for vid, n in self.views.items()] + [f"{k} {fmt(n)}" for k, n in self.fixed.items()]
        return f"{fmt(self.total)} ({', '.join(parts)})"

    def to_json(self) -> dict:
        return {"total": self.total, "views": self.views, "fixed": self.fixed, "notes": self.notes}


class ExportShapes:
    """What a view's export_size reads: the exported samples' token counts per model (stored
    tokenization), the models' shapes, the options."""

    def __init__(self, board, options: ExportOptions):
        self.board, self.options = board, options
        self._lengths: dict[str, np.ndarray] = {}

    def info(self, model: str):
        return self.board.infos[model]

    def lengths(self, model: str) -> np.ndarray:
        """Token counts of the exported samples, in export order."""
        if model not in self._lengths:
            res = self.board.executor.tokens(model)
            self._lengths[model] = np.asarray(res["lengths"])[self.options.samples].astype(np.int64)
        return self._lengths[model]

    def layers(self, model: str) -> list[int]:
        n = self.info(model).n_layers
        return [l for l in (self.options.layers if self.options.layers is not None else range(n)) if l < n]


def js_baseline_bytes(webgl: bool = False) -> int:
    """Bokeh's and Panel's JavaScript as the page inlines it, from the installed files (bokeh-gl
    only for a page with a WebGL plot)."""
    total = PAGE_GLUE_BYTES
    bokeh = importlib.util.find_spec("bokeh")
    panel = importlib.util.find_spec("panel")
    if bokeh is not None:
        js = Path(bokeh.origin).parent / "server" / "static" / "js"
        bundles = BOKEH_BUNDLES + (("bokeh-gl.min.js",) if webgl else ())
        total += sum((js / name).stat().st_size for name in bundles if (js / name).exists())
    if panel is not None:
        p = Path(panel.origin).parent / "dist" / "panel.min.js"
        total += p.stat().st_size if p.exists() else 0
    return total


def port_bytes(views) -> int:
    """lensframe's runtime and the JS ports of the exportable views (each type once)."""
    from .views.base import RUNTIME_JS

    scripts = {view.export_script_path() for view in views}
    return RUNTIME_JS.stat().st_size + sum(p.stat().st_size for p in scripts)


def tokens_bytes(board, model: str, samples: list[int]) -> int:
    """The shared token strings of the exported samples (display strings and their repr())."""
    strings = board.executor.tokens(model).meta["strings"]
    rows = [list(strings[s]) for s in samples]
    return len(json.dumps({"strings": rows, "reprs": [[repr(t) for t in r] for r in rows]}, ensure_ascii=False)
               .encode()) + 8 * len(samples)


def plan_export(board, options: ExportOptions) -> ExportPlan:
    shapes = ExportShapes(board, options)
    views, notes, exported = {}, {}, []
    for vid, view in board.views.items():
        why = view.export_refusal()
        if why:
            notes[vid] = why
            views[vid] = NOTE_BYTES
            continue
        exported.append(view)
        views[vid] = int(sum(view.export_size(shapes).values()))
    fixed = {"scripts": js_baseline_bytes(any(v.export_webgl for v in exported))
             + (port_bytes(exported) if exported else 0)}
    if exported:  # the components' modules and stylesheets, once per page: about the file that holds them
        fixed["components"] = COMPONENTS_BYTES + sum({k: n for v in exported for k, n in v.export_components.items()}.values())
    models = sorted({v.model for v in exported})
    if models:
        fixed["tokens"] = sum(tokens_bytes(board, m, options.samples) for m in models)
    return ExportPlan(views, notes, fixed)


# An option is suggested when its planned page is this much under the limit: strings are estimated
# (measured: the plan within 2% of the written page, docs/BENCHMARKS.md), and what is suggested must fit.
SUGGESTION_MARGIN = 0.02
NOTE_BYTES = 4_500  # a note card in the page (its text and stylesheets)
# The JSComponents' modules and stylesheets (views/widgets.py) and Panel's stylesheet models, once
# per page: measured on an export of text, logit_lens and attention (bokeh 3.9, panel 1.9).
COMPONENTS_BYTES = 50_000


# Focus fields an exported page can open at (a probe's text needs a live model; a served page's
# address holds no cluster either, and selections are looked up live)
EXPORT_FOCUS = ("sample", "position", "layer", "head", "neuron")


def export_options(board, samples=None, layers=None, focus=None) -> ExportOptions:
    """Options from what a user gives: samples and layers as "0-49,60" text, a list or a range
    (default: every sample, every layer); focus as a query string ("sample=3&layer=5", as the served
    page's address and `serve --open` write it) or a dict. Samples a view is pinned to are added: the
    page must hold them."""
    n = len(board.dataset)
    picked = list(range(n)) if samples is None else (parse_samples(samples, n, "--samples") if isinstance(samples, str)
                                                   else [int(s) for s in samples])
    bad = [s for s in picked if not 0 <= s < n]
    if bad or not picked:
        raise LensframeError(f"samples {ranges(bad) if bad else '(none)'}: the dataset has {n} samples (0..{n - 1})\n"
                             f"    hint: e.g. --samples 0-{min(n, 50) - 1}")
    for view in board.views.values():
        pin = view.p.pin.sample
        if pin is not None and pin < n and pin not in picked and not view.export_refusal():
            picked.append(pin)
    if layers is not None:
        depth = max(info.n_layers for info in board.infos.values())
        layers = parse_samples(layers, depth, "--layers") if isinstance(layers, str) else [int(x) for x in layers]
    return ExportOptions(picked, layers, export_focus(board, focus, picked))


def export_focus(board, focus, samples: list[int]) -> dict:
    """The page's first focus from --focus, checked as a served page checks its address."""
    from urllib.parse import urlencode

    from .focus_url import parse_query, query_string

    if not focus:
        return {}
    text = focus if isinstance(focus, str) else urlencode(focus)
    pairs, _ = query_string(text)
    hint = f"    hint: fields: {', '.join(EXPORT_FOCUS)}, e.g. --focus \"sample=3&position=5&layer=12\""
    other = [n for n, _ in pairs if n not in EXPORT_FOCUS]
    if other:
        why = " (a probe's text needs a live model: lensframe serve --open takes it)" if "text" in other else ""
        raise LensframeError(f"--focus {text!r}: an exported page cannot open at {', '.join(map(repr, other))}{why}\n{hint}")
    fields, problems = parse_query(pairs, board)
    if problems:
        raise LensframeError(f"--focus {text!r}: " + "; ".join(problems) + f"\n{hint}")
    if "sample" in fields and fields["sample"] not in samples:
        raise LensframeError(f"--focus {text!r}: sample {fields['sample']} is not among the exported samples "
                             f"({ranges(samples)})\n    hint: add it to --samples")
    return fields


def parse_samples(text: str, n_samples: int, option: str = "--samples") -> list[int]:
    """'0-49', '3', '0-9,20,30-35' -> sample indices (in that order, without repeats)."""
    out: list[int] = []
    for item in str(text).split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", item)
        if not m:
            raise LensframeError(f"{option} {text!r}: cannot read {item.strip()!r}\n"
                                 f"    hint: write them as 0-49, or 3,7,10-12")
        lo, hi = int(m.group(1)), int(m.group(2) if m.group(2) is not None else m.group(1))
        if hi < lo:
            raise LensframeError(f"{option} {text!r}: {lo}-{hi} is empty\n    hint: write the lower index first")
        if hi >= n_samples:
            what = "samples" if option == "--samples" else "layers"
            raise LensframeError(f"{option} {text!r}: there are {n_samples} {what} (0..{n_samples - 1})\n"
                                 f"    hint: {option} 0-{n_samples - 1}")
        out.extend(i for i in range(lo, hi + 1) if i not in out)
    return out


def ranges(indices: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5' (what --samples and --layers read)."""
    out, i = [], 0
    while i < len(indices):
        j = i
        while j + 1 < len(indices) and indices[j + 1] == indices[j] + 1:
            j += 1
        out.append(str(indices[i]) if i == j else f"{indices[i]}-{indices[j]}")
        i = j + 1
    return ",".join(out)


def check_fits(board, plan: ExportPlan, options: ExportOptions, max_bytes: int, spec_name: str) -> None:
    """Refuse a page over max_bytes, naming options that fit: fewer samples (the first ones of those
    asked), or fewer attention layers (the first ones) with every sample asked."""
    if plan.total <= max_bytes:
        return
    fits = []
    room = max_bytes * (1 - SUGGESTION_MARGIN)
    n = _largest(len(options.samples), lambda k: plan_export(board, ExportOptions(options.samples[:k], options.layers))
                 .total <= room)
    if n:
        p = plan_export(board, ExportOptions(options.samples[:n], options.layers))
        fits.append(f"--samples {ranges(options.samples[:n])} ({fmt(p.total)})")
    has_layers = [v for v in board.views.values() if not v.export_refusal() and v.export_by_layer]
    if has_layers:
        layers = ExportShapes(board, options).layers(has_layers[0].model)
        m = _largest(len(layers), lambda k: plan_export(board, ExportOptions(options.samples, layers[:k]))
                     .total <= room)
        if m:
            p = plan_export(board, ExportOptions(options.samples, layers[:m]))
            fits.append(f"--layers {ranges(layers[:m])} ({fmt(p.total)})")
    if not fits and has_layers:  # both at once: the first sample at the first layer
        layers = ExportShapes(board, options).layers(has_layers[0].model)
        p = plan_export(board, ExportOptions(options.samples[:1], layers[:1]))
        if p.total <= room:
            fits.append(f"--samples {options.samples[0]} --layers {layers[0]} ({fmt(p.total)})")
    hint = ("options that fit: " + "; ".join(fits)) if fits else \
        "nothing fits: even one sample (and one layer) is larger; raise --max-mb"
    raise LensframeError(f"{spec_name}: the exported page would be {plan.describe()}, over --max-mb "
                         f"{max_bytes / 1e6:g}\n    hint: {hint}")


def _largest(n: int, fits) -> int:
    """The largest k in 1..n with fits(k), for fits monotone (0 when none)."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo
