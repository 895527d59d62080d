"""Notebook parity: examples/notebook.ipynb runs headless in a Jupyter kernel (nbclient) on a few texts
of every spec in specs/, and its outputs are the dashboards and numbers it says they are.

The test replaces the notebook's parameter cell (LIMIT, MAX_TOKENS, CACHE_DIR) so that each spec runs
on 8 texts of 16 tokens in the session's SmolLM2 store, then checks:
- no cell raised, and no spec was skipped;
- every spec's dashboard is in the outputs (Panel's notebook bundle: text/html and
  application/vnd.holoviews_exec.v0+json, the html's docs JSON carrying the panes' HTML), with every
  view's card and stable CSS class (`lf-card-<id>`, `lf-view-<type>`) and no error card;
- the demo's dashboard shows the focus the notebook moved to;
- the number the notebook prints from board.result equals the store's, read in this process, and a
  plain transformers forward of the same text.
"""
from __future__ import annotations

import html
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "examples" / "notebook.ipynb"
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
LIMIT, MAX_TOKENS = 8, 16
PANEL_MIME = "application/vnd.holoviews_exec.v0+json"


def shrunk(path: Path) -> dict:
    """The notebook's load() with LIMIT and MAX_TOKENS set: the spec's data on fewer, shorter texts."""
    data = yaml.safe_load(path.read_text())
    data["dataset"]["limit"] = min(data["dataset"].get("limit") or LIMIT, LIMIT)
    data["dataset"]["max_tokens"] = min(data["dataset"].get("max_tokens") or MAX_TOKENS, MAX_TOKENS)
    return data


def kernel_manager(folder: Path):
    """A kernel of this very Python (the installed `python3` kernelspec runs whatever `python` is on
    PATH, which may lack lensframe, or not exist), from a temporary kernelspec."""
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    spec = folder / "kernels" / "lensframe-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "lensframe test", "language": "python",
        "env": {"OMP_NUM_THREADS": "2"},
    }))
    return KernelManager(kernel_name="lensframe-test", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec.parent)]))


@pytest.fixture(scope="module")
def executed(smollm2_available, audit_example, smollm2_cache, tmp_path_factory):
    """The notebook, executed with small parameters; (notebook, seconds)."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    del audit_example  # specs/audit/model: specs/audit.yaml needs it
    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "the notebook has one cell tagged `parameters`"
    assert "LIMIT = None" in params[0].source and "CACHE_DIR = None" in params[0].source
    params[0].source = f"LIMIT = {LIMIT}\nMAX_TOKENS = {MAX_TOKENS}\nCACHE_DIR = {str(smollm2_cache)!r}\n"
    km = kernel_manager(tmp_path_factory.mktemp("kernelspec"))
    client = nbclient.NotebookClient(nb, km=km, timeout=900, resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    t0 = time.perf_counter()
    client.execute(env={**os.environ, "OMP_NUM_THREADS": "2"})
    return nb, time.perf_counter() - t0


def outputs(nb):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


def stdout(nb) -> str:
    return "".join(o.text for o in outputs(nb) if o.output_type == "stream" and o.name == "stdout")


def panel_docs(output) -> tuple[set[str], list[str]]:
    """(CSS classes of every model, the HTML of every pane) of one Panel output's Bokeh document."""
    page = output.data["text/html"]
    start = page.index("var docs_json = ") + len("var docs_json = ")
    docs, _ = json.JSONDecoder().raw_decode(page, start)
    classes, texts = set(), []

    def walk(x):
        if isinstance(x, dict):
            if isinstance(x.get("css_classes"), list):
                classes.update(x["css_classes"])
            if isinstance(x.get("text"), str):
                texts.append(html.unescape(x["text"]))
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(docs)
    return classes, texts


def dashboards(nb) -> dict[str, list[tuple[set[str], list[str]]]]:
    """Panel outputs by the dashboard title they show."""
    found: dict = {}
    for o in outputs(nb):
        if o.output_type in ("display_data", "execute_result") and PANEL_MIME in o.data and "text/html" in o.data:
            classes, texts = panel_docs(o)
            for t in texts:
                m = re.search(r"<h2 class='lf-title'>(.*?)</h2>", t)
                if m:
                    found.setdefault(html.unescape(m.group(1)), []).append((classes, texts))
    return found


def test_the_notebook_runs_headless_without_errors(executed):
    nb, seconds = executed
    print(f"notebook executed in {seconds:.0f}s")
    errors = [o for o in outputs(nb) if o.output_type == "error"]
    assert not errors, [f"{o.ename}: {o.evalue}" for o in errors]
    stderr = "".join(o.text for o in outputs(nb) if o.output_type == "stream" and o.name == "stderr")
    assert "Traceback" not in stderr, stderr
    out = stdout(nb)
    assert "skipped" not in out, out
    for path in SPECS:  # the loop over specs/ reached every spec and computed it
        assert re.search(rf"^{re.escape(path.name)}: .* forward passes", out, re.M), f"no line for {path.name}:\n{out}"


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_spec_renders_every_view_in_the_notebook(executed, path):
    nb, _ = executed
    spec = yaml.safe_load(path.read_text())
    shown = dashboards(nb).get(spec["title"])
    assert shown, f"no dashboard titled {spec['title']!r} in the notebook's outputs"
    for classes, texts in shown:
        for vid, view in spec["views"].items():
            assert f"lf-card-{vid}" in classes, f"{path.name}: no card for view {vid}"
            assert f"lf-view-{view['type'].replace('_', '-')}" in classes, f"{path.name}: view {vid} drew nothing"
        assert "lf-error-card" not in classes
        failed = [t for t in texts if re.search(r"class=['\"][^'\"]*\blf-(error|waiting)\b", t)]
        assert not failed, f"{path.name}: a view shows an error or is still waiting: {failed[0][:2000]}"


def test_the_demo_shows_the_focus_the_notebook_set(executed):
    nb, _ = executed
    demo = yaml.safe_load((ROOT / "specs" / "demo.yaml").read_text())
    shown = dashboards(nb)[demo["title"]]
    assert len(shown) == 2  # the step-by-step section's, then the loop's (focused on sample 0)
    texts = shown[0][1]
    focused = [t for t in texts if "lf-sample-head" in t or "lf-lens-head" in t or "lf-attn-head" in t]
    assert focused and any("sample <b class='lf-sample-index'>3</b>" in t for t in focused)
    for t in focused:
        positions = re.findall(r"class='lf-position'>(\d+)<", t)
        assert positions and set(positions) == {"5"}, t


def test_the_printed_prediction_matches_the_store_and_transformers(executed, smollm2_cache, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lensframe.board import Board

    nb, _ = executed
    m = re.search(r"final layer, sample (\d+), position (\d+): top token id (\d+) .*, p = ([0-9.]+)", stdout(nb))
    assert m, "the notebook prints the final layer's top prediction"
    s, t, top, p = int(m.group(1)), int(m.group(2)), int(m.group(3)), float(m.group(4))
    assert (s, t) == (3, 5)

    # the same shrunk spec in this process reads what the notebook's kernel stored
    board = Board.from_dict(shrunk(ROOT / "specs" / "demo.yaml"), base_dir=ROOT / "specs", cache_dir=smollm2_cache)
    lens = board.views["lens"]
    res = board.result(lens.lens_node(MAX_TOKENS))
    assert res is not None, "the notebook stored the demo's lens in CACHE_DIR"
    assert int(res["ids"][s, -1, t, 0]) == top
    assert f"{res['probs'][s, -1, t, 0]:.6f}" == m.group(4)

    # independent: the model's own next-token distribution, from a plain transformers forward
    folder = board.sources["main"].folder()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).eval()
    ids = tokenizer(board.dataset.texts[s], truncation=True, max_length=MAX_TOKENS)["input_ids"]
    stored = board.result(lens.tokens_node(MAX_TOKENS))
    assert ids == stored["ids"][s, : stored["lengths"][s]].tolist()
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([ids])).logits[0, t].double(), -1)
    assert int(probs.argmax()) == top
    np.testing.assert_allclose(p, float(probs.max()), atol=2e-5)
