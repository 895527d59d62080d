"""A Board is a loaded spec: validated against the models' capabilities, compiled to a plan, bound
to a store and an executor. It is the Python API (lensframe.load) and what the server serves.
"""
from __future__ import annotations

from pathlib import Path

from .checks import check_spec
from .compiler import compile_plan
from .focus import Focus
from .spec.validate import Spec, load_spec, validate_spec
from .store import Store


class Board:
    def __init__(self, spec: Spec, cache_dir: str | Path | None = None, device: str = "cpu",
                 trust_remote_code: bool = False):
        self.spec = spec
        self.device = device
        self.trust_remote_code = trust_remote_code  # kept so a rebuild (Board.rebuilt) asks the same
        checked = check_spec(spec, trust_remote_code=trust_remote_code)
        self.sources, self.dataset, self.infos, self.views = (checked.sources, checked.dataset, checked.infos,
                                                              checked.views)
        self.store = Store(Path(cache_dir) if cache_dir else spec.base_dir / ".lensframe" / "cache")
        self.store.sweep()  # temp files of a killed run
        self.fingerprints = fps = {name: src.fingerprint() for name, src in self.sources.items()}
        self.plan = compile_plan(self.views, fps, self.dataset.fingerprint, self.infos, len(self.dataset),
                                 spec.dataset.max_tokens, self.store, int(spec.run.keep_focus_mb * 2**20))
        from .executor import Executor

        self.executor = Executor(self)
        self.focus = self.new_focus()
        self._loaded: dict = {}

    def rebuilt(self, spec: Spec) -> "Board":
        """A board for an edited version of this spec (`lensframe serve --watch`), on the same store,
        taking over what this board has in memory that still applies, so an edit costs only the
        nodes whose keys changed: the loaded models (with their locks: a dataset pass of this board
        may still run on them) where name, fingerprint and device are the same, and the memoized
        focus results, lookups, probe tokens and generations of those models where every node
        they cover has the same key in the new plan. A title, metric or layout change then runs
        no forward; a new node runs its own pass (dataset results are found in the store by key).
        Raises SpecError, like Board(), when the edited spec does not check."""
        new = Board(spec, cache_dir=self.store.root, device=self.device, trust_remote_code=self.trust_remote_code)
        new.store.read_only = self.store.read_only
        _carry_over(self, new)
        return new

    def new_focus(self) -> Focus:
        """A fresh focus (one per browser session): the first model, sample 0, the spec's probe set."""
        return Focus(model=next(iter(self.spec.models)), probes=list(self.spec.probes))

    @classmethod
    def from_file(cls, path, *, allow_local_views: bool = False, **kwargs) -> "Board":
        """A board from a spec file. allow_local_views: let the spec name view classes in Python
        files beside it (`type: ./my_views.py:MyView`); that runs their code, so only for a spec you
        trust (the command line's --allow-local-views). Other kwargs go to Board()."""
        return cls(load_spec(path, allow_local_views=allow_local_views), **kwargs)

    @classmethod
    def from_text(cls, text: str, file: str = "<spec>", base_dir=None, *, allow_local_views: bool = False,
                  **kwargs) -> "Board":
        """A board from spec text; relative paths (and local view files) from `base_dir`."""
        return cls(validate_spec(text, file, base_dir, allow_local_views), **kwargs)

    @classmethod
    def from_dict(cls, data: dict, base_dir=None, **kwargs) -> "Board":
        """A board built in Python: `data` is what the YAML would hold (models/model, dataset,
        views, layout, ...); it is validated exactly like a file, relative paths from `base_dir`
        (allow_local_views and the other kwargs as in from_text)."""
        import yaml

        base = Path(base_dir) if base_dir else Path.cwd()
        data = {"lensframe": 1, **data}  # the format version a file must state; a dict is this version
        return cls.from_text(yaml.safe_dump(data, sort_keys=False), "<python>", base, **kwargs)

    def to_yaml(self) -> str:
        """The spec as YAML, every default written out: it validates and compiles to the same plan,
        so a layout built or changed in Python can be kept in git beside the others."""
        import yaml

        header = f"# written by lensframe board.to_yaml() from {self.spec.file}\n"
        return header + yaml.safe_dump(self.spec.normalized(), sort_keys=False, allow_unicode=True)

    @property
    def title(self) -> str:
        return self.spec.title

    def compute(self, progress=True):
        """Run the dataset passes (cached results are reused); returns a ComputeReport."""
        return self.executor.compute(progress)

    def result(self, node):
        """A stored result of a prepare, dataset or derive node (None when not computed yet)."""
        planned = self.plan.nodes[node]
        if planned.key not in self._loaded:  # read and verified once, then served from memory
            res = self.executor.prepared(node) if node.kind == "prepare" else self.store.get(planned.key)
            if res is None:
                return None
            self._loaded[planned.key] = res
        return self._loaded[planned.key]

    def dream(self, layer: int, neuron: int, *, model: str | None = None, span: int = 8, start: str = "example",
              text: str | None = None, **settings):
        """Dream of a neuron (text deep dream; lensframe.ops.dream): returns the DreamTrace, stored and
        reused like the dashboard's. `settings` are DreamSettings fields (steps, lr, decay, ...);
        start="example" needs the layer's top examples computed (a top_examples or dream view)."""
        from . import dreams
        from .dream_spec import DreamSettings, DreamTarget

        model = model or next(iter(self.spec.models))
        target, config = DreamTarget("neuron", layer, neuron), DreamSettings(**settings)
        dreams.check(self, model, target, config, span)
        begin = dreams.resolve_start(self, model, target, span, start, text, config.seed)
        return dreams.run(self, model, target, config, begin)

    def probe(self, text: str, fillers=None) -> list:
        """Ask the model about typed text: it becomes this board's focused sample (board.focus.text),
        so every focus view follows it, with one focus forward per model, kept in memory only (never
        in the store). Several lines, or a template with `{}` and `fillers` (a list, or "a, b"), make
        a probe set: board.focus.probes, the first one focused. Returns the probes; raises
        lensframe.probes.ProbeError on text it cannot take (empty, a template without `{}`, ...)."""
        from .probes import ask

        if isinstance(fillers, (list, tuple)):
            fillers = "\n".join(str(f) for f in fillers)
        return ask(self.focus, text, fillers or "")[0]

    def compare_probes(self, probes=None, token: str | None = None) -> list[dict]:
        """The probe set (default: board.focus.probes) compared across the spec's models: each probe's
        top next token and probability per model, and with two models their KL and the change in
        `token`'s probability; one batched forward per model (lensframe.probes.compare_probes)."""
        from .probes import compare_probes

        return compare_probes(self.executor, list(self.spec.models), list(probes or self.focus.probes), token)

    def export(self, path, samples=None, max_mb: float | None = None, layers=None, focus=None, neurons=None):
        """Write this dashboard as one HTML file that opens offline, its views linked in the page
        (lensframe export; server/export.py). samples, layers: "0-49" text, a list or a range (default:
        all); neurons: the neurons whose top examples the page holds, the same way (default: every
        neuron of the exported layers); focus: where the page opens ("sample=3&layer=5" or a dict of
        sample, position, layer, head, neuron); max_mb: refuse a larger page (LensframeError naming
        what fits). Computes what is missing first. Returns the ExportReport (bytes per view, the plan)."""
        from .export_plan import check_fits, export_options, plan_export

        options = export_options(self, samples, layers, focus, neurons)
        limit = int(max_mb * 10**6) if max_mb is not None else None
        if limit is not None:
            check_fits(self, plan_export(self, options), options, limit, str(self.spec.file))
        self.compute(progress=False)
        from lensframe.server.export import export

        return export(self, path, options, max_bytes=limit)

    def panel(self, focus: Focus | None = None):
        """The Panel layout of this board (display it in Jupyter, or call .servable())."""
        from lensframe.server.app import build_app

        return build_app(self, focus or self.focus)


def _carry_over(old: Board, new: Board) -> None:
    """Move what `old` holds in memory into `new` where it is still valid (Board.rebuilt)."""
    keys = {node: p.key for node, p in new.plan.nodes.items()}
    same = {node for node, p in old.plan.nodes.items() if keys.get(node) == p.key}  # unchanged nodes
    wanted = set(keys.values())
    new._loaded.update({k: v for k, v in old._loaded.items() if k in wanted})  # stored results already read
    a, b = old.executor, new.executor
    models = [m for m, mod in a._models.items()
              if m in new.sources and old.fingerprints.get(m) == new.fingerprints.get(m) and old.device == new.device]
    for m in models:
        b._models[m], b._model_locks[m] = a._models[m], a.model_lock(m)
    same_probe_cut = old.spec.run.probe_max_tokens == new.spec.run.probe_max_tokens
    for key, results in _entries(a._focus_memo):
        model, probe = key[0], len(key) == 3 and key[1] == "probe"
        if model not in models or (probe and not same_probe_cut):
            continue
        needed = [p.node for p in new.plan.of_kind("focus", model)]
        if probe:  # a probe's entry also holds its row of every per-sample dataset node
            needed += b.per_sample_nodes(model)
        if all(n in results and n in same for n in needed):
            b._focus_memo.put(key, {n: results[n] for n in needed})
    for key, res in _entries(a._lookup_memo):  # (node, args), or ("probe_set", model, probes)
        if (key[0] in same) if not isinstance(key[0], str) else (key[0] == "probe_set" and key[1] in models):
            b._lookup_memo.put(key, res)
    for memo_a, memo_b, ok in ((a._probe_tokens, b._probe_tokens, same_probe_cut), (a.generations, b.generations, True)):
        for key, res in _entries(memo_a):  # keyed by (model, ...)
            if ok and key[0] in models:
                memo_b.put(key, res)


def _entries(memo) -> list:
    """A snapshot of an executor Memo's (key, value) pairs, oldest first."""
    with memo._lock:
        return list(memo._items.items())
