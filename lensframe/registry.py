"""View types, registered through the `lensframe.views` entry point group.

Built-ins register the same way (pyproject.toml); from an uninstalled checkout we fall back to the
built-in table so the repo works in place.
"""
from __future__ import annotations

from functools import lru_cache
from importlib import import_module
from importlib.metadata import entry_points

BUILTIN_VIEWS = {
    "text": "lensframe.views.text:TextView",
    "logit_lens": "lensframe.views.logit_lens:LogitLensView",
    "attention": "lensframe.views.attention:AttentionView",
    "neurons": "lensframe.views.neurons:NeuronsView",
    "top_examples": "lensframe.views.top_examples:TopExamplesView",
    "ffn_vocab": "lensframe.views.ffn_vocab:FfnVocabView",
    "neuron_clusters": "lensframe.views.neuron_clusters:NeuronClustersView",
    "text_clusters": "lensframe.views.text_clusters:TextClustersView",
    "difference": "lensframe.views.difference:DifferenceView",
    "dream": "lensframe.views.dream:DreamView",
    "model_diff": "lensframe.views.model_diff:ModelDiffView",
}


def _load(target: str):
    module, _, attr = target.partition(":")
    return getattr(import_module(module), attr)


@lru_cache(maxsize=1)
def view_types() -> dict[str, type]:
    found = {ep.name: ep.value for ep in entry_points(group="lensframe.views")}
    table = {**BUILTIN_VIEWS, **found}
    return {name: _load(target) for name, target in sorted(table.items())}
