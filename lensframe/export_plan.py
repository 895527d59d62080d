"""The size of an exported page (`lensframe export`), planned before anything is written.

Bytes per view come from the stored shapes (each exported sample's token count, the model's layers,
heads and vocabulary) and the options (which samples, which layers, which neurons' top examples),
through each view's `export_size` (views/base.py); the rest is the page's fixed part: Bokeh's and
Panel's JavaScript inline (~3 MB), lensframe's runtime and the views' ports, and the shared token
strings. `--max-mb`
refuses a page over the limit and names options that would fit. No Panel, no model: numpy and the
store only.
"""
from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass, field, replace
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
    layer); focus: the focus the page opens at (fields of Focus; default: the first sample);
    neurons: the neurons whose top examples it holds, at each of those layers (None: every neuron)."""

    samples: list[int]
    layers: list[int] | None = None
    focus: dict = field(default_factory=dict)
    neurons: list[int] | None = None


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

    def neurons(self, model: str) -> list[int]:
        """The neurons whose top examples the page holds (at each exported layer)."""
        d = self.info(model).d_mlp
        return [i for i in (self.options.neurons if self.options.neurons is not None else range(d)) if i < d]


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


def export_options(board, samples=None, layers=None, focus=None, neurons=None) -> ExportOptions:
    """Options from what a user gives: samples, layers and neurons as "0-49,60" text, a list or a
    range (default: every sample, every layer, every neuron); focus as a query string
    ("sample=3&layer=5", as the served page's address and `serve --open` write it) or a dict. Samples
    a view is pinned to are added: the page must hold them; so are the neurons a view that exports
    by neuron (top_examples) is pinned to."""
    n = len(board.dataset)
    picked = list(range(n)) if samples is None else _indices(samples, n, "--samples", f"the dataset has {n} samples", 50)
    for view in board.views.values():
        pin = view.p.pin.sample
        if pin is not None and pin < n and pin not in picked and not view.export_refusal():
            picked.append(pin)
    if layers is not None:
        depth = max(info.n_layers for info in board.infos.values())
        layers = parse_samples(layers, depth, "--layers") if isinstance(layers, str) else [int(x) for x in layers]
    if neurons is not None:
        neurons = export_neurons(board, neurons)
    return ExportOptions(picked, layers, export_focus(board, focus, picked, neurons), neurons)


def export_neurons(board, neurons) -> list[int]:
    """--neurons as sorted indices, checked against the models' d_mlp, with the neurons a view that
    exports by neuron is pinned to."""
    d = max(info.d_mlp for info in board.infos.values())
    picked = _indices(neurons, d, "--neurons", f"the model has {d} neurons a layer", 100)
    for view in board.views.values():
        pin = view.p.pin.neuron
        if view.export_by_neuron and not view.export_refusal() and pin is not None and pin < d:
            picked.append(pin)
    return sorted(set(picked))


def _indices(given, n: int, option: str, where: str, example: int) -> list[int]:
    """--samples or --neurons (text, a list or a range) as indices, each checked to be below n."""
    picked = parse_samples(given, n, option) if isinstance(given, str) else [int(x) for x in given]
    bad = [i for i in picked if not 0 <= i < n]
    if bad or not picked:
        raise LensframeError(f"{option[2:]} {ranges(bad) if bad else '(none)'}: {where} (0..{n - 1})\n"
                             f"    hint: e.g. {option} 0-{min(n, example) - 1}")
    return picked


def export_focus(board, focus, samples: list[int], neurons: list[int] | None = None) -> dict:
    """The page's first focus from --focus, checked as a served page checks its address (and
    against the exported samples and neurons)."""
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
    by_neuron = any(v.export_by_neuron and not v.export_refusal() for v in board.views.values())
    if by_neuron and neurons is not None and fields.get("neuron") is not None and fields["neuron"] not in neurons:
        raise LensframeError(f"--focus {text!r}: neuron {fields['neuron']} is not among the exported neurons "
                             f"({ranges(neurons)})\n    hint: add it to --neurons")
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
            what = {"--samples": "samples", "--layers": "layers"}.get(option, "neurons a layer")
            raise LensframeError(f"{option} {text!r}: there are {n_samples} {what} (0..{n_samples - 1})\n"
                                 f"    hint: {option} 0-{n_samples - 1}")
        out.extend(i for i in range(lo, hi + 1) if i not in out)
    return out


def ranges(indices: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5' (what --samples, --layers and --neurons read)."""
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
    asked), fewer layers (the first ones) with every sample asked, or fewer neurons' top examples
    (the first ones) with every sample and layer asked; else the first sample at the first layer,
    with as many neurons as fit."""
    if plan.total <= max_bytes:
        return
    fits = []
    room = max_bytes * (1 - SUGGESTION_MARGIN)
    total = lambda o: plan_export(board, o).total  # noqa: E731

    def most(base: ExportOptions, name: str, values: list[int]) -> tuple[int, ExportOptions]:
        """The most of `values` (the first ones) the page holds and fits, with the options then."""
        k = _largest(len(values), lambda k: total(replace(base, **{name: values[:k]})) <= room)
        return k, replace(base, **{name: values[:k]})

    n, fewer = most(options, "samples", options.samples)
    if n:
        fits.append(f"--samples {ranges(fewer.samples)} ({fmt(total(fewer))})")
    exported = [v for v in board.views.values() if not v.export_refusal()]
    has_layers = [v for v in exported if v.export_by_layer]
    has_neurons = [v for v in exported if v.export_by_neuron]
    shapes = ExportShapes(board, options)
    layers = shapes.layers(has_layers[0].model) if has_layers else []
    neurons = shapes.neurons(has_neurons[0].model) if has_neurons else []
    # the neuron the page opens at and those views are pinned to come first: what is named must hold them
    first = [i for i in [options.focus.get("neuron")] + [v.p.pin.neuron for v in has_neurons] if i in neurons]
    neurons = list(dict.fromkeys(first + neurons))
    if has_layers:
        m, fewer = most(options, "layers", layers)
        if m:
            fits.append(f"--layers {ranges(fewer.layers)} ({fmt(total(fewer))})")
    if has_neurons:
        m, fewer = most(options, "neurons", neurons)
        if m:
            fits.append(f"--neurons {ranges(sorted(fewer.neurons))} ({fmt(total(fewer))})")
    if not fits and (has_layers or has_neurons):  # at once: the first sample at the first layer, and neurons that fit
        least = replace(options, samples=options.samples[:1], layers=layers[:1] if has_layers else options.layers)
        words = [f"--samples {options.samples[0]}"] + ([f"--layers {layers[0]}"] if has_layers else [])
        if total(least) > room and has_neurons:
            m, fewer = most(least, "neurons", neurons)
            if m:
                least = fewer
                words.append(f"--neurons {ranges(sorted(fewer.neurons))}")
        if total(least) <= room:
            fits.append(f"{' '.join(words)} ({fmt(total(least))})")
    if fits:
        hint = "options that fit: " + "; ".join(fits)
    else:  # what is left at the least the options can ask: the page's own parts, and a view's own parameters
        smallest = plan_export(board, replace(options, samples=options.samples[:1], layers=layers[:1] or options.layers,
                                              neurons=neurons[:1] or options.neurons))
        vid, size = max(smallest.views.items(), key=lambda kv: kv[1], default=(None, 0))
        least = f"one sample{' at one layer' if layers else ''}{' with one neuron' if neurons else ''}"
        hint = (f"nothing fits: {least} is {fmt(smallest.total)}: the page's scripts and components "
                f"{fmt(sum(smallest.fixed.values()))}" + (f", view `{vid}` {fmt(size)} (lower its k or top_n in the spec)"
                                                          if vid else "") + "; or raise --max-mb")
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
