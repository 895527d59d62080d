"""Views from other packages and from local files (docs/WRITING_VIEWS.md).

The example plugin examples/lensframe-token-entropy (installed by scripts/setup.sh --test) registers
the `token_entropy` view through the `lensframe.views` entry point: it is listed by `lensframe views`,
its params are validated like a built-in's, its op's numbers match a plain transformers forward, and
the op fuses into the same dataset pass as the logit lens. A view in a local .py file is refused
unless --allow-local-views is given, and the file does not even run.
"""
from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest

from lensframe.board import Board
from lensframe.cli import main
from lensframe.spec.validate import LOCAL_REFUSED

from .conftest import TEXTS, tiny_spec
from .test_sharing import ForwardCounter

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "lensframe-token-entropy"
INSTALL = f"pip install --no-deps -e {EXAMPLE.relative_to(EXAMPLE.parents[1])} (scripts/setup.sh --test does)"
MAX_TOKENS = 16  # tiny_spec's
VIEWS = """  text: {type: text}
  ent: {type: token_entropy, metric: surprisal, top_k: 4}
  lens: {type: logit_lens, metric: entropy, top_k: 3}
"""


@pytest.fixture(scope="module")
def plugin():
    """The example plugin, installed (CI installs it; a missing install fails rather than skips)."""
    found = {ep.name: ep.value for ep in entry_points(group="lensframe.views")}
    assert found.get("token_entropy") == "lensframe_token_entropy.view:TokenEntropyView", (
        f"the example plugin is not installed: {INSTALL}")


def _write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def test_plugin_view_is_listed(plugin, capsys):
    assert main(["views"]) == 0
    out = capsys.readouterr().out
    block = out[out.index("token_entropy:"):].split("\n\n")[0]
    assert "reads focus: sample, position; a click sets: position" in block
    assert "metric: entropy | surprisal | rank = entropy" in block
    assert "top_k: int = 5" in block


@pytest.mark.parametrize("bad, message, hint", [
    ("metrc: rank", "views.ent.metrc: unknown key 'metrc'", "did you mean 'metric'?"),
    ("metric: entrpy", "views.ent.metric: must be one of 'entropy', 'surprisal' or 'rank'", "did you mean 'entropy'?"),
    ("top_k: 0", "views.ent.top_k: must be >= 1 (got 0)", None),
])
def test_plugin_params_get_line_numbered_errors(plugin, tiny_models, tmp_path, capsys, bad, message, hint):
    spec = _write(tmp_path, tiny_spec(tiny_models["gpt2"], f"  text: {{type: text}}\n  ent: {{type: token_entropy, {bad}}}\n"))
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    line = _line_of(spec, "token_entropy")
    assert f"{spec}:{line}:" in err and message in err, err
    if hint:
        assert f"hint: {hint}" in err, err


def _reference(model_dir: Path, k: int) -> list[dict]:
    """Entropy, surprisal, rank bounds and top-k per token, from a plain transformers forward of each
    text alone (float64 softmax), tokenized here as lensframe's tiny spec does."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    out = []
    for text in TEXTS:
        ids = tok(text, truncation=True, max_length=MAX_TOKENS)["input_ids"]
        with torch.no_grad():
            z = model(torch.tensor([ids])).logits[0].double()
        logp = torch.log_softmax(z, -1)
        nxt = torch.tensor(ids[1:])
        zt = z[:-1].gather(-1, nxt[:, None])
        out.append({
            "ids": ids,
            "entropy": -(logp.exp() * logp).sum(-1).numpy(),
            "surprisal": -logp[:-1].gather(-1, nxt[:, None]).squeeze(-1).numpy(),
            # strictly more likely tokens, allowing for the float32 noise of a batched forward
            "rank_lo": (z[:-1] > zt + 1e-4).sum(-1).numpy(), "rank_hi": (z[:-1] > zt - 1e-4).sum(-1).numpy(),
            "top_probs": logp.topk(k, -1).values.exp().numpy(),
        })
    return out


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_op_matches_an_independent_forward(plugin, tiny_models, tmp_path, kind):
    b = Board.from_text(tiny_spec(tiny_models[kind], VIEWS), base_dir=tmp_path, cache_dir=tmp_path / "store")
    b.compute(progress=False)
    res = b.result(b.views["ent"].stats_node(MAX_TOKENS))
    tok = b.executor.tokens("main")
    for s, ref in enumerate(_reference(tiny_models[kind], 4)):
        n = len(ref["ids"])
        assert tok["ids"][s, :n].tolist() == ref["ids"] and tok["lengths"][s] == n
        np.testing.assert_allclose(res["entropy"][s, :n], ref["entropy"], atol=1e-4)
        np.testing.assert_allclose(res["surprisal"][s, :n - 1], ref["surprisal"], atol=1e-4)
        assert np.isnan(res["surprisal"][s, n - 1]) and res["rank"][s, n - 1] == -1  # nothing follows the last
        rank = res["rank"][s, :n - 1]
        assert np.all((ref["rank_lo"] <= rank) & (rank <= ref["rank_hi"])), (rank, ref["rank_lo"], ref["rank_hi"])
        np.testing.assert_allclose(res["probs"][s, :n], ref["top_probs"], atol=1e-4)
    assert len(np.unique(res["rank"])) > 20  # spread over the vocabulary: not a degenerate case


def test_op_fuses_into_the_lens_pass(plugin, tiny_models, tmp_path):
    b = Board.from_text(tiny_spec(tiny_models["gpt2"], VIEWS), base_dir=tmp_path, cache_dir=tmp_path / "store")
    dataset = [ps for ps in b.plan.passes() if ps["kind"] == "dataset"]
    assert len(dataset) == 1 and sorted(n.split("(")[0] for n in dataset[0]["nodes"]) == ["logit_lens", "token_entropy"]
    counter = ForwardCounter(b.executor.model("main").model)
    report = b.compute(progress=False)
    n_batches = -(-len(b.dataset) // b.spec.run.batch_size)
    assert counter.calls == report.forward_passes == report.batches == n_batches
    # Two roads to the same number: the lens decodes the last block's residual through the final
    # norm and the unembedding itself; the plugin reads the model's own logits.
    ent = b.result(b.views["ent"].stats_node(MAX_TOKENS))["entropy"]
    lens = b.result(b.views["lens"].lens_node(MAX_TOKENS))["entropy"][:, -1]
    lengths = b.executor.tokens("main")["lengths"]
    for s, n in enumerate(lengths):
        np.testing.assert_allclose(ent[s, :n], lens[s, :n], atol=1e-4)
    assert b.compute(progress=False).forward_passes == 0  # stored like a built-in's result


def test_shards_merge_to_the_single_pass(plugin, tiny_models, tmp_path):
    """Two shards folded apart and merged (as Dask workers do) equal the one-process result."""
    from lensframe.ops import get_op

    b = Board.from_text(tiny_spec(tiny_models["gpt2"], VIEWS), base_dir=tmp_path, cache_dir=tmp_path / "store")
    b.compute(progress=False)
    node = b.views["ent"].stats_node(MAX_TOKENS)
    op, ex = get_op(node.op), b.executor
    batches = ex.dataset_batches("main")
    states = []
    for shard in (batches[:1], batches[1:]):
        ctx = ex.pass_context("main", [node], {})
        st = {node: op.init(node, ctx)}
        ex.run_batches("main", ctx, st, shard)
        states.append(st[node])
    merged = op.finalize(node, op.merge(node, *states), ctx)
    whole = b.result(node)
    for name in whole.arrays:
        np.testing.assert_array_equal(merged[name], whole[name])


LOCAL = """from pathlib import Path

from pydantic import Field

from lensframe.views.base import View, ViewParams, esc, html_pane

Path(__file__).with_name("ran.txt").write_text("imported")  # shows whether lensframe ran this file


class Caption(View):
    type = "caption"
    description = "a line of text"

    class Params(ViewParams):
        text: str = Field("hello", description="what to show")

    def render(self, ctx):
        return html_pane(f"<div class='lf-caption'>{esc(self.p.text)}</div>")
"""


def _local_spec(tmp_path: Path, tiny_models, view: str, code: str = LOCAL) -> Path:
    (tmp_path / "my_views.py").write_text(code)
    return _write(tmp_path, tiny_spec(tiny_models["gpt2"], f"  text: {{type: text}}\n  note: {view}\n"))


def test_local_view_refused_without_the_flag(tiny_models, tmp_path, capsys):
    spec = _local_spec(tmp_path, tiny_models, "{type: ./my_views.py:Caption, text: hi}")
    for argv in (["validate", str(spec)], ["plan", str(spec), "--cache-dir", str(tmp_path / "store")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        line = _line_of(spec, "my_views.py")
        assert f"{spec}:{line}:" in err and f"views.note.type: {LOCAL_REFUSED}" in err, err
        assert "hint: only for a spec you trust" in err and "--allow-local-views" in err
    assert not (tmp_path / "ran.txt").exists(), "a refused local view file was run"


def test_local_view_allowed_with_the_flag(tiny_models, tmp_path, capsys):
    spec = _local_spec(tmp_path, tiny_models, "{type: ./my_views.py:Caption, text: hi}")
    assert main(["validate", "--allow-local-views", str(spec)]) == 0
    assert (tmp_path / "ran.txt").exists()
    assert main(["plan", str(spec), "--allow-local-views", "--cache-dir", str(tmp_path / "store")]) == 0
    capsys.readouterr()
    from lensframe.spec.validate import load_spec

    board = Board(load_spec(spec, allow_local_views=True), cache_dir=tmp_path / "store")
    assert type(board.views["note"]).__name__ == "Caption" and board.views["note"].p.text == "hi"
    assert board.spec.normalized()["views"]["note"]["type"] == "./my_views.py:Caption"


def test_local_views_from_python_need_the_same_permission(tiny_models, tmp_path):
    """lensframe.load, Board.from_file/from_text/from_dict refuse a local view unless allow_local_views=True."""
    import yaml

    import lensframe as lf
    from lensframe.errors import SpecError

    spec = _local_spec(tmp_path, tiny_models, "{type: ./my_views.py:Caption, text: hi}")
    data = yaml.safe_load(spec.read_text())
    store = {"cache_dir": tmp_path / "store"}
    refused = [lambda: lf.load(spec, **store), lambda: Board.from_file(spec, **store),
               lambda: Board.from_text(spec.read_text(), str(spec), tmp_path, **store),
               lambda: Board.from_dict(data, base_dir=tmp_path, **store)]
    for build in refused:
        with pytest.raises(SpecError, match=LOCAL_REFUSED):
            build()
    assert not (tmp_path / "ran.txt").exists(), "a refused local view file was run"
    boards = [lf.load(spec, allow_local_views=True, **store), Board.from_file(spec, allow_local_views=True, **store),
              Board.from_text(spec.read_text(), str(spec), tmp_path, allow_local_views=True, **store),
              Board.from_dict(data, base_dir=tmp_path, allow_local_views=True, **store)]
    for board in boards:
        assert type(board.views["note"]).__name__ == "Caption" and board.views["note"].p.text == "hi"


def test_dream_and_diff_take_allow_local_views(tiny_models, tmp_path, capsys):
    spec = _local_spec(tmp_path, tiny_models, "{type: ./my_views.py:Caption, text: hi}")
    dream = ["dream", str(spec), "--layer", "1", "--neuron", "3", "--steps", "3", "--span", "2", "--json",
             "--cache-dir", str(tmp_path / "store")]
    assert main(dream) == 2
    assert LOCAL_REFUSED in capsys.readouterr().err
    assert main(dream + ["--allow-local-views"]) == 0
    capsys.readouterr()
    other = _write(tmp_path, spec.read_text().replace("text: hi", "text: hello"), "other.yaml")
    assert main(["diff", str(spec), str(other)]) == 2
    assert LOCAL_REFUSED in capsys.readouterr().err
    assert main(["diff", str(spec), str(other), "--allow-local-views"]) == 0
    assert "note" in capsys.readouterr().out


# A local view with its own dataset op: the op registers when the file is imported (on Dask workers too).
LOCAL_WITH_OP = """import numpy as np

from lensframe.graph import Node
from lensframe.ops import register
from lensframe.ops.base import FilledRows, Op, Result
from lensframe.views.base import View, esc, html_pane


@register
class MeanNormOp(Op):
    name, version, kind = "test_local_mean_norm", 1, "dataset"

    def hooks(self, node, info):
        return {"resid_post.0"}

    def estimate_bytes(self, node, info, n_samples, n_tokens):
        return 4 * n_samples

    def init(self, node, ctx):
        return FilledRows({"norm": (1,)}, {"norm": np.float32}, len(ctx.dataset))

    def update(self, node, state, batch, ctx):
        mask = batch.mask.float()
        norms = (batch.captures["resid_post.0"].norm(dim=-1) * mask).sum(1) / mask.sum(1)
        state.put(batch.samples, "norm", [np.array([v], dtype=np.float32) for v in norms.tolist()])
        return state

    def merge(self, node, a, b):
        return a.merge(b)

    def finalize(self, node, state, ctx):
        return Result({"norm": state.arrays["norm"][:, 0]})


class MeanNorm(View):
    type = "mean_norm"
    description = "each sample's mean residual norm after block 0"

    def norm_node(self, max_tokens):
        return Node.make("test_local_mean_norm", self.model, inputs=(self.tokens_node(max_tokens),))

    def needs(self, max_tokens):
        return [self.tokens_node(max_tokens), self.norm_node(max_tokens)]

    def render(self, ctx):
        norm = ctx.result(self.norm_node(ctx.board.spec.dataset.max_tokens))["norm"][ctx.sample]
        return html_pane(f"<div class='lf-mean-norm'>{esc(f'{norm:.3f}')}</div>")
"""


def test_a_local_view_and_its_op_compute_on_dask_workers(tiny_models, tmp_path, capsys):
    """compute --workers 1 --allow-local-views: the worker validates the spec with the flag, so it
    imports the file and its op; the merged result equals one process's."""
    pytest.importorskip("dask.distributed")
    spec = _local_spec(tmp_path, tiny_models, "{type: ./my_views.py:MeanNorm}", LOCAL_WITH_OP)
    dask = ["compute", str(spec), "--workers", "1", "--json", "--cache-dir", str(tmp_path / "dask")]
    assert main(dask) == 2
    assert LOCAL_REFUSED in capsys.readouterr().err
    assert main(dask + ["--allow-local-views"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    local = Board.from_file(spec, allow_local_views=True, cache_dir=tmp_path / "local")
    assert report["forward_passes"] == local.compute(progress=False).forward_passes > 1
    sharded = Board.from_file(spec, allow_local_views=True, cache_dir=tmp_path / "dask")
    node = local.views["note"].norm_node(MAX_TOKENS)
    a, b = local.result(node)["norm"], sharded.result(node)["norm"]
    assert a.shape == (len(TEXTS),) and (a > 0).all()
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("view, code, message, hint", [
    ("{type: ./my_views.py:Caption, txt: hi}", LOCAL, "views.note.txt: unknown key 'txt'", "did you mean 'text'?"),
    ("{type: ./my_views.py:Captoin}", LOCAL, "my_views.py has no 'Captoin'", "did you mean 'Caption'?"),
    ("{type: ./nowhere.py:Caption}", LOCAL, "no such file ./nowhere.py", "the path is relative to the spec's folder"),
    ("{type: ./my_views.py:Caption}", LOCAL + "\n1 / 0\n", "importing ./my_views.py failed (line 20): ZeroDivisionError",
     "my_views.py:20"),
    ("{type: ./my_views.py}", LOCAL, "unknown view type './my_views.py'", "name the class too: ./my_views.py:ClassName"),
    ("{type: ./my_views.py:Caption}", LOCAL + "\nfrom lensframe.ops import Op, register\n\n\n@register\nclass Tok(Op):\n"
     "    name = 'tokens'\n", "importing ./my_views.py failed (line 23): OpNameClash: op 'tokens' of lensframe_local_views.",
     "my_views.py:23"),
])
def test_local_view_errors(tiny_models, tmp_path, capsys, view, code, message, hint):
    spec = _local_spec(tmp_path, tiny_models, view, code)
    assert main(["validate", "--allow-local-views", str(spec)]) == 2
    err = capsys.readouterr().err
    assert f"{spec}:{_line_of(spec, 'note:')}:" in err and message in err and hint in err, err


def test_a_broken_plugin_does_not_break_lensframe(monkeypatch, tiny_models, tmp_path, capsys):
    """A plugin that fails to import, or claims a built-in's name, is left out; a spec naming it says why."""
    from importlib.metadata import EntryPoint

    import lensframe.registry as registry

    fake = [EntryPoint("broken", "no_such_module_xyz:View", "lensframe.views"),
            EntryPoint("text", "lensframe_token_entropy.view:TokenEntropyView", "lensframe.views")]
    monkeypatch.setattr(registry, "entry_points", lambda group: fake)
    registry._scan.cache_clear()
    try:
        types = registry.view_types()
        assert "broken" not in types and types["text"].__name__ == "TextView"
        assert "a built-in's name" in registry.view_type_problems()["text"]
        spec = _write(tmp_path, tiny_spec(tiny_models["gpt2"], "  text: {type: text}\n  b: {type: broken}\n"))
        assert main(["validate", str(spec)]) == 2
        err = capsys.readouterr().err
        assert "views.b.type: unknown view type 'broken'" in err
        assert "hint: no_such_module_xyz:View failed to import: ModuleNotFoundError" in err, err
    finally:
        registry._scan.cache_clear()


CLASHING_PLUGIN = """from lensframe.ops import register
from lensframe.ops.base import Op
from lensframe.views.base import View


@register
class BetterLens(Op):
    name, kind = "logit_lens", "dataset"


class ClashyView(View):
    type = "clashy"
"""


def test_an_op_cannot_take_a_registered_name(tmp_path):
    """register refuses an op named like a built-in's (or like another package's), naming both."""
    from lensframe.ops import _OPS, OpNameClash, get_op, register
    from lensframe.ops.base import Op

    builtin = get_op("logit_lens")

    def op_class(module, name):
        return type("MyOp", (Op,), {"name": name, "kind": "dataset", "__module__": module})

    with pytest.raises(OpNameClash) as err:
        register(op_class("someplugin.ops", "logit_lens"))
    assert "someplugin.ops.MyOp" in str(err.value) and "the built-in op 'logit_lens' of lensframe.ops.lens." in str(err.value)
    assert get_op("logit_lens") is builtin
    try:
        first = register(op_class("plugin_a.ops", "test_clash_op"))
        assert register(first) is first  # the same class again (a module imported twice) is no clash
        with pytest.raises(OpNameClash, match=r"op 'test_clash_op' of plugin_b\.ops\.MyOp clashes with the op "
                                              r"'test_clash_op' of plugin_a\.ops\.MyOp"):
            register(op_class("plugin_b.ops", "test_clash_op"))
        assert type(get_op("test_clash_op")).__module__ == "plugin_a.ops"
    finally:
        _OPS.pop("test_clash_op", None)


def test_a_clash_is_found_before_the_builtins_are_imported(tmp_path):
    """In a fresh process a plugin's op may register before any built-in op module was imported:
    register checks the table of built-in op names, so the clash is still found (and the built-in
    kept) with no built-in imported (several import torch)."""
    import subprocess
    import sys

    (tmp_path / "early_plugin.py").write_text(CLASHING_PLUGIN)
    code = ("import sys; from lensframe.ops import OpNameClash, get_op\n"
            "assert 'lensframe.ops.lens' not in sys.modules\n"
            "try:\n    import early_plugin\nexcept OpNameClash as e:\n    print('refused:', e)\n"
            "assert 'lensframe.ops.lens' not in sys.modules and 'torch' not in sys.modules\n"
            "print(type(get_op('logit_lens')).__module__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert "refused: op 'logit_lens' of early_plugin.BetterLens clashes with the built-in op" in out, out
    assert out.strip().endswith("lensframe.ops.lens")


def test_get_op_imports_every_builtin_op_module(tmp_path):
    """In a fresh process, get_op finds every built-in op (the table of docs/WRITING_VIEWS.md) without
    anything else imported first, and has imported every module of lensframe.ops."""
    import re
    import subprocess
    import sys

    doc = (Path(__file__).resolve().parent.parent / "docs" / "WRITING_VIEWS.md").read_text()
    table = doc[doc.index("<!-- ops:begin -->"):doc.index("<!-- ops:end -->")]
    names = re.findall(r"^\| `(\w+)` \|", table, flags=re.M)
    modules = sorted(p.stem for p in (Path(__file__).resolve().parent.parent / "lensframe" / "ops").glob("*.py")
                     if p.stem not in ("__init__", "base"))
    code = ("import sys; from lensframe.ops import get_op\n"
            "for name in sys.argv[1].split(','):\n    assert get_op(name).name == name, name\n"
            "missing = [m for m in sys.argv[2].split(',') if 'lensframe.ops.' + m not in sys.modules]\n"
            "assert not missing, missing")
    subprocess.run([sys.executable, "-c", code, ",".join(names), ",".join(modules)], cwd=tmp_path, check=True)
    assert {"dream", "clustering", "describe"} <= set(modules)


def test_the_table_of_builtin_op_names_is_what_the_modules_register():
    """BUILTIN_OPS (which a plugin's op is checked against without importing the built-ins) names
    every built-in op and the module that registers it, and nothing else."""
    from lensframe.ops import _OPS, BUILTIN_OPS, _import_builtins, is_builtin

    _import_builtins()
    registered = {name: type(op).__module__.rsplit(".", 1)[1] for name, op in _OPS.items() if is_builtin(type(op))}
    assert registered == BUILTIN_OPS


def test_a_plugin_whose_op_clashes_is_left_out(monkeypatch, tiny_models, tmp_path, capsys):
    """A plugin view whose op takes a built-in's name is left out with the reason; the built-in op stays."""
    import sys
    from importlib.metadata import EntryPoint

    import lensframe.registry as registry
    from lensframe.ops import get_op

    (tmp_path / "clashy_plugin.py").write_text(CLASHING_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    fake = [EntryPoint("clashy", "clashy_plugin:ClashyView", "lensframe.views")]
    monkeypatch.setattr(registry, "entry_points", lambda group: fake)
    registry._scan.cache_clear()
    try:
        assert "clashy" not in registry.view_types() and "text" in registry.view_types()
        problem = registry.view_type_problems()["clashy"]
        assert problem.startswith("clashy_plugin:ClashyView is left out: op 'logit_lens' of clashy_plugin.BetterLens "
                                  "clashes with the built-in op 'logit_lens' of lensframe.ops.lens."), problem
        assert type(get_op("logit_lens")).__module__ == "lensframe.ops.lens"
        spec = _write(tmp_path, tiny_spec(tiny_models["gpt2"], "  c: {type: clashy}\n"))
        assert main(["validate", str(spec)]) == 2
        err = capsys.readouterr().err
        assert "views.c.type: unknown view type 'clashy'" in err and "hint: clashy_plugin:ClashyView is left out" in err, err
    finally:
        registry._scan.cache_clear()
        sys.modules.pop("clashy_plugin", None)


def test_writing_views_lists_every_builtin_op():
    """docs/WRITING_VIEWS.md's table of nodes a view can ask for names every built-in op, with its kind."""
    import re

    from lensframe.ops import _OPS, get_op

    get_op("tokens")  # imports the built-in ops
    builtin = {name: op.kind for name, op in _OPS.items() if type(op).__module__.startswith("lensframe.ops.")}
    doc = (Path(__file__).resolve().parent.parent / "docs" / "WRITING_VIEWS.md").read_text()
    table = doc[doc.index("<!-- ops:begin -->"):doc.index("<!-- ops:end -->")]
    listed = dict(re.findall(r"^\| `(\w+)` \| (\w+) \|", table, flags=re.M))
    assert listed == builtin


def test_metrics_share_one_node_and_render(plugin, tiny_models, tmp_path):
    """Views that differ only in colour share one result; each renders its metric, the last token
    (nothing follows it) blank for surprisal and rank; a token click sets focus.position."""
    pytest.importorskip("panel")
    from lensframe.context import ViewContext
    from lensframe.focus import Focus
    from lensframe_token_entropy.widget import EntropyStrip

    views = "".join(f"  {m}: {{type: token_entropy, metric: {m}}}\n" for m in ("entropy", "surprisal", "rank"))
    b = Board.from_text(tiny_spec(tiny_models["gpt2"], views), base_dir=tmp_path, cache_dir=tmp_path / "store")
    nodes = [p for p in b.plan.nodes.values() if p.node.op == "token_entropy"]
    assert len(nodes) == 1 and sorted(nodes[0].views) == ["entropy", "rank", "surprisal"]
    b.compute(progress=False)
    focus = Focus(model="main", sample=1)
    n = int(b.executor.tokens("main")["lengths"][1])
    res = b.result(nodes[0].node)
    for metric, view in b.views.items():
        ctx = ViewContext(b, focus, view)
        strip = next(o for o in view.render(ctx).objects if isinstance(o, EntropyStrip))
        assert len(strip.tokens) == n and strip.selected == n - 1
        values = res[metric][1, :n]
        shown = [f"{v:.1f}" if metric != "rank" else str(int(v)) for v in values[:-1]]
        assert strip.labels[:-1] == shown
        assert (strip.labels[-1] == "–") == (metric != "entropy")
        assert all(0 <= s <= 1 for s in strip.shade if s is not None)
    from types import SimpleNamespace

    for callback in strip._msg__callbacks:  # what a click's message from the browser runs
        callback(SimpleNamespace(data={"index": 2}))
    assert focus.position == 2


def test_the_builtin_view_list_and_the_package_entry_points_agree():
    """The built-in views are listed twice by necessity: in lensframe.registry (so a checkout works
    before any install) and as the package's lensframe.views entry points (so other tools find them
    like a plugin's). They must name the same views and classes."""
    from lensframe.registry import BUILTIN_VIEWS

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["lensframe.views"] == BUILTIN_VIEWS
