"""Every check of a spec that needs no weights: its model sources and their configs (depth, heads,
MLP width), its dataset (files, columns, labels, emptiness), and each view's capability checks
against those shapes (layers, heads, pins, columns, the views it reads). Board runs it before it
compiles; `lensframe validate` runs it alone, so a spec that validates also loads.

Nothing here imports torch: configs are read as JSON (or from GGUF metadata) and the views'
checks read shapes only.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .data import Dataset, load_dataset
from .errors import SpecError
from .models.sources import ModelInfo, NotLocal, Source, resolve_source
from .spec.validate import Spec


@dataclass
class Checked:
    """What the checks read on the way, for the Board built on them."""
    sources: dict[str, Source]
    dataset: Dataset | None
    infos: dict[str, ModelInfo]
    views: dict  # view id -> View instance, its info set
    not_local: list[str] = field(default_factory=list)  # models whose config is not on this machine


def check_spec(spec: Spec, *, trust_remote_code: bool = False, offline: bool = False) -> Checked:
    """Raises SpecError with every issue found (file:line:col each). offline: a hub model whose
    config is not in the local cache is listed in `not_local` and the checks that need its shapes
    are skipped, instead of asking the hub."""
    issues, sources, infos, not_local = [], {}, {}, []
    models_block = {p[1] for p in spec.positions.values if len(p) >= 2 and p[0] == "models"}
    for name, mspec in spec.models.items():
        where = ("models", name, "source") if name in models_block else ("model",)
        if mspec.trust_remote_code and not trust_remote_code:
            issues.append(spec.issue("trust_remote_code needs the command line to ask for it too",
                                     where[:-1] + ("trust_remote_code",) if where != ("model",) else where,
                                     "pass --trust-remote-code, or remove it from the spec"))
            continue
        try:
            sources[name] = resolve_source(name, mspec, spec.base_dir, where)
        except SpecError as err:
            issues += spec.locate(err).issues
    try:
        dataset = load_dataset(spec.dataset, spec.base_dir)
    except SpecError as err:
        issues += spec.locate(err).issues
        dataset = None
    for name, src in sources.items():
        try:
            infos[name] = src.info(offline=offline)
        except NotLocal:
            not_local.append(name)
        except SpecError as err:
            issues += spec.locate(err).issues
    for name, info in infos.items():  # every text is cut to max_tokens, which must fit each model's context
        if info.max_positions and spec.dataset.max_tokens > info.max_positions:
            issues.append(spec.issue(
                f"max_tokens {spec.dataset.max_tokens} is longer than the context of model {name!r} "
                f"({info.max_positions} positions)", ("dataset", "max_tokens"),
                f"use max_tokens: {info.max_positions} or less"))
    views = {vid: v.cls(vid, v.params, v.model) for vid, v in spec.views.items()}
    for view in views.values():
        view.info = infos.get(view.model)  # shapes from the config, for needs() and check()
        view.infos = infos  # every model's, for views that compare two
        if view.info is None:
            continue
        found = view.check(view.info) + (view.check_data(dataset) if dataset else [])
        found += _pin_issues(view, view.info, dataset, spec.dataset.max_tokens)
        for path, msg, hint in found:
            issues.append(spec.issue(msg, ("views", view.id) + tuple(path), hint))
    if not issues and not not_local:  # cross-view checks read every view's shapes
        for view in views.values():
            for path, msg, hint in view.check_views(views, spec.dataset.max_tokens):
                issues.append(spec.issue(msg, ("views", view.id) + tuple(path), hint))
    if issues:
        raise SpecError(issues)
    return Checked(sources, dataset, infos, views, not_local)


def _pin_issues(view, info, dataset, max_tokens: int) -> list:
    """A pinned sample, position or neuron that the dataset, the token limit or the model lacks
    (layer and head are each view's own check)."""
    pin, out = view.p.pin, []
    if pin.sample is not None and dataset is not None and pin.sample >= len(dataset):
        out.append((("pin", "sample"), f"sample {pin.sample} is beyond the dataset ({len(dataset)} samples: "
                    f"0..{len(dataset) - 1})", None))
    if pin.position is not None and pin.position >= max_tokens:
        out.append((("pin", "position"), f"position {pin.position} is beyond max_tokens ({max_tokens}: positions "
                    f"0..{max_tokens - 1})", None))
    if pin.neuron is not None and pin.neuron >= info.d_mlp:
        out.append((("pin", "neuron"), f"neuron {pin.neuron} is beyond the MLP's width ({info.d_mlp} neurons: "
                    f"0..{info.d_mlp - 1})", None))
    return out
