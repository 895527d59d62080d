"""One adapter per architecture family: normalized hook names -> modules.

Hook names follow TransformerLens's spirit (docs/ARCHITECTURE.md, "Modules"):
  resid_pre.{l}   input of block l (resid_pre.0 is the embedding, positions included)
  attn_out.{l}    attention output added to the residual
  attn_pattern.{l} attention probabilities [batch, head, query, key] (eager attention only)
  resid_mid.{l}   residual after attention, before the MLP
  mlp_in.{l}      normalized input of the MLP
  mlp_post.{l}    neuron activations m (the coefficients of the FFN value vectors)
  mlp_out.{l}     MLP output added to the residual
  resid_post.{l}  output of block l
  final_norm      output of the final norm (what the unembedding reads)
  unembed         logits
Everything model-specific (module paths, which norm, gated MLP, where the value vectors live) is in
the `Family` table (lensframe.models.families) and nowhere else.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Callable, Iterator

import torch

from .families import FAMILIES, GPT2, LLAMA, NEOX, Family, family_for  # noqa: F401  (re-exported)


def keeps_logits(model) -> bool:
    """Whether the HF model's forward takes logits_to_keep (transformers' causal LMs do), so a
    forward that reads only captures can skip the LM head on all but the last position."""
    import inspect

    return "logits_to_keep" in inspect.signature(model.forward).parameters


def _get(root, path: str):
    for part in path.split("."):
        root = getattr(root, part)
    return root


def _first(x):
    return x[0] if isinstance(x, (tuple, list)) else x


_HOOK_RE = re.compile(r"^(resid_pre|attn_out|attn_pattern|resid_mid|mlp_in|mlp_post|mlp_out|resid_post)\.(\d+)$")


class Adapter:
    """Normalized access to one loaded HF causal LM."""

    def __init__(self, model: torch.nn.Module, family: Family):
        self.model = model
        self.family = family
        self.layers = _get(model, family.layers)
        cfg = model.config
        self.n_layers = len(self.layers)
        self.n_heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head")
        self.d_model = getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd")
        self.parallel = bool(family.parallel_attr and getattr(cfg, family.parallel_attr, False))
        self.d_mlp = self.value_vectors(0).shape[0]

    # --- the pieces of the model the lens needs -------------------------------------------------
    @property
    def final_norm(self) -> torch.nn.Module:
        return _get(self.model, self.family.final_norm)

    @property
    def unembed_weight(self) -> torch.Tensor:
        """E, [vocab, d_model]."""
        return _get(self.model, self.family.unembed).weight

    @property
    def unembed_bias(self) -> torch.Tensor | None:
        return getattr(_get(self.model, self.family.unembed), "bias", None)

    @property
    def embed_weight(self) -> torch.Tensor:
        """The input embedding matrix W_E, [vocab, d_model]."""
        return _get(self.model, self.family.embed).weight

    @property
    def embed(self) -> torch.nn.Module:
        return _get(self.model, self.family.embed)

    def value_vectors(self, layer: int) -> torch.Tensor:
        """The FFN value vectors v_i of a layer as rows, [d_mlp, d_model] (Geva et al. 2022):
        MLP(x) = sum_i m_i v_i + b. GPT-2's Conv1D c_proj.weight is [d_mlp, d] (rows); an
        nn.Linear down_proj.weight is [d, d_mlp] (columns)."""
        w = _get(self.layers[layer], self.family.mlp_down).weight
        return w if self.family.value_vectors == "rows" else w.T

    def mlp_out_bias(self, layer: int) -> torch.Tensor | None:
        return getattr(_get(self.layers[layer], self.family.mlp_down), "bias", None)

    def mlp_down(self, layer: int) -> torch.nn.Module:
        """The module whose input is mlp_post.{layer} (where neuron edits are applied)."""
        return _get(self.layers[layer], self.family.mlp_down)

    def attn_out_proj(self, layer: int) -> torch.nn.Module:
        """The attention output projection (W_O) of `layer`: nn.Linear [out, in] or GPT-2's Conv1D [in, out]."""
        return _get(self.layers[layer], self.family.attn_out)

    def mlp_in_projs(self, layer: int) -> list[torch.nn.Module]:
        """The MLP's input projections of `layer` (gate and up for a gated MLP)."""
        return [_get(self.layers[layer], path) for path in self.family.mlp_in]

    def hook_names(self) -> list[str]:
        names = ["final_norm", "unembed"]
        for l in range(self.n_layers):
            names += [f"{k}.{l}" for k in ("resid_pre", "attn_out", "attn_pattern", "resid_mid",
                                           "mlp_in", "mlp_post", "mlp_out", "resid_post")]
        return names

    def _point(self, name: str) -> tuple[torch.nn.Module, str, Callable]:
        """(module, 'pre'|'post', extract) for a hook name."""
        if name == "final_norm":
            return self.final_norm, "post", _first
        if name == "unembed":
            return _get(self.model, self.family.unembed), "post", _first
        m = _HOOK_RE.match(name)
        if not m or int(m.group(2)) >= self.n_layers:
            raise KeyError(f"unknown hook {name!r} for a {self.n_layers}-layer {self.family.name} model")
        kind, block = m.group(1), self.layers[int(m.group(2))]
        f = self.family
        return {
            "resid_pre": (block, "pre", _first),
            "resid_post": (block, "post", _first),
            "attn_out": (_get(block, f.attn), "post", lambda o: o[0]),
            "attn_pattern": (_get(block, f.attn), "post", lambda o: o[1]),
            "resid_mid": (_get(block, f.ln_mid), "pre", _first),
            "mlp_in": (_get(block, f.ln_mid), "post", _first),
            "mlp_post": (_get(block, f.mlp_down), "pre", _first),
            "mlp_out": (_get(block, f.mlp), "post", _first),
        }[kind]

    def _derived(self, name: str) -> tuple[str, ...] | None:
        """Hooks computed from others rather than read from a module (see Family.parallel_attr)."""
        m = _HOOK_RE.match(name)
        if self.parallel and m and m.group(1) == "resid_mid":
            return (f"resid_pre.{m.group(2)}", f"attn_out.{m.group(2)}")
        return None

    @contextmanager
    def capture(self, names) -> Iterator["Captures"]:
        """Register hooks for `names`; captured tensors land in the yielded dict.

        Captures are detached unless gradients are enabled, so a dataset pass holds no graph.
        """
        store = Captures()
        put = store.__setitem__
        wanted = set()
        for name in set(names):
            parts = self._derived(name)
            if parts:
                store.derived[name] = parts
            wanted.update(parts or (name,))
        handles = []
        for name in sorted(wanted):
            module, where, extract = self._point(name)

            def hook(mod, args, kwargs_or_out, *rest, _name=name, _extract=extract, _where=where):
                if _where == "pre":
                    value = args[0] if args else kwargs_or_out.get("hidden_states")
                else:
                    value = _extract(rest[0] if rest else kwargs_or_out)
                if value is None:
                    raise RuntimeError(f"hook {_name}: nothing captured (is attn_implementation eager?)")
                put(_name, value if torch.is_grad_enabled() else value.detach())

            if where == "pre":
                handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(lambda mod, args, out, _h=hook: _h(mod, args, out)))
        try:
            yield store
        finally:
            for h in handles:
                h.remove()

    @contextmanager
    def stop_after(self, layer: int | None, exc: type[Exception]) -> Iterator[None]:
        """Raise `exc` once block `layer` has run (None: never), for callers that need nothing
        later in the model (a dream of an early neuron skips the remaining blocks and the head)."""
        if layer is None:
            yield
            return

        def stop(mod, args, out):
            raise exc()

        handle = self.layers[layer].register_forward_hook(stop)
        try:
            yield
        finally:
            handle.remove()

    @contextmanager
    def edit_neurons(self, edits) -> Iterator[None]:
        """Set neuron activations during a forward: edits are (layer, position, neuron, value),
        applied to mlp_post (the input of the MLP's output projection) by a hook, never by
        touching the weights. value 0 turns a sub-update m_i v_i off."""
        by_layer: dict[int, list] = {}
        for layer, position, neuron, value in edits:
            by_layer.setdefault(int(layer), []).append((int(position), int(neuron), float(value)))
        handles = []
        for layer, items in by_layer.items():
            def pre(mod, args, kwargs, _items=items):
                x = (args[0] if args else kwargs["hidden_states"]).clone()
                for position, neuron, value in _items:
                    x[:, position, neuron] = value
                return ((x,) + tuple(args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": x})
            handles.append(self.mlp_down(layer).register_forward_pre_hook(pre, with_kwargs=True))
        try:
            yield
        finally:
            for h in handles:
                h.remove()


class Captures(dict):
    """Captured activations by hook name; derived hooks are computed from their parts on access."""

    def __init__(self):
        super().__init__()
        self.derived: dict[str, tuple[str, ...]] = {}

    def __missing__(self, name: str):
        if name in self.derived:
            value = sum(self[p] for p in self.derived[name])
            self[name] = value
            return value
        raise KeyError(name)

    def complete(self) -> "Captures":
        for name in self.derived:
            self[name]
        return self
