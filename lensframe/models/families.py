"""The architecture families lensframe knows: where each kind of module lives in a transformers
model of that family. Plain data with no torch import, so checking a spec against a model's config
(`lensframe validate`) needs neither torch nor the weights; lensframe.models.adapters reads it to
hook a loaded model.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str
    layers: str  # path of the ModuleList of blocks, from the CausalLM root
    attn: str  # attention module, relative to a block
    ln_mid: str  # norm before the MLP, relative to a block (its input is resid_mid)
    mlp: str  # MLP module, relative to a block
    mlp_down: str  # MLP output projection, relative to a block (its input is mlp_post)
    final_norm: str
    unembed: str
    embed: str
    gated_mlp: bool
    value_vectors: str  # "rows" (GPT-2 Conv1D c_proj.weight) or "columns" (nn.Linear down_proj.weight)
    # GPT-NeoX (Pythia) by default runs attention and MLP in parallel on the same input:
    # x + attn(ln1(x)) + mlp(ln2(x)). There is no module whose input is "after attention", so
    # resid_mid is derived as resid_pre + attn_out (what the residual holds once attention has added).
    parallel_attr: str | None = None  # config flag that turns the parallel residual on
    # attention output projection, relative to a block (its input is the heads' concatenated outputs)
    attn_out: str = ""
    # MLP input projections, relative to a block (each output dimension is one neuron's pre-activation)
    mlp_in: tuple[str, ...] = ()


LLAMA = Family("llama", "model.layers", "self_attn", "post_attention_layernorm", "mlp", "mlp.down_proj",
               "model.norm", "lm_head", "model.embed_tokens", True, "columns",
               attn_out="self_attn.o_proj", mlp_in=("mlp.gate_proj", "mlp.up_proj"))
GPT2 = Family("gpt2", "transformer.h", "attn", "ln_2", "mlp", "mlp.c_proj",
              "transformer.ln_f", "lm_head", "transformer.wte", False, "rows",
              attn_out="attn.c_proj", mlp_in=("mlp.c_fc",))
NEOX = Family("gpt_neox", "gpt_neox.layers", "attention", "post_attention_layernorm", "mlp", "mlp.dense_4h_to_h",
              "gpt_neox.final_layer_norm", "lm_head", "gpt_neox.embed_in", False, "columns",
              parallel_attr="use_parallel_residual", attn_out="attention.dense", mlp_in=("mlp.dense_h_to_4h",))

# model_type in a transformers config -> family
FAMILIES = {
    "llama": LLAMA, "mistral": LLAMA, "qwen2": LLAMA, "qwen3": LLAMA,
    "gpt2": GPT2,
    "gpt_neox": NEOX,
}


def family_for(model_type: str) -> Family | None:
    return FAMILIES.get(model_type)
