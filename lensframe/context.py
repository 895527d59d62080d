"""What a view sees at render time: the focus (with its pins applied) and results by node."""
from __future__ import annotations

from .focus import FIELDS, Focus
from .graph import Node
from .ops.base import Result
from .probes import Probe


class NotReady(Exception):
    """A dataset result the view needs has not been computed yet (the dashboard shows progress)."""


class ViewContext:
    def __init__(self, board, focus: Focus, view, in_place: bool = True):
        self.board, self.focus, self.view = board, focus, view
        self.state: dict = {}  # this view's own state in this session (e.g. neuron edits)
        # Components kept across focus changes (part/keep). in_place=False makes every render
        # build new ones: the re-create engine, kept so the benchmark can compare the two.
        self.in_place = in_place
        self._parts: dict = {}
        self.parts_created = 0  # how many components part/keep built (tests count them)

    def part(self, name: str, cls, *, init: dict | None = None, on_click=None, **live):
        """The component `name` of this view in this session: built as cls(**init, **live) on
        the first render, and on later renders the same object with only the params in `live`
        whose values changed set (one param.update, so the page patches it in place instead of
        building new Bokeh models). `init` params are given once (a widget's starting value,
        which the user may have changed since). `on_click` is the current click callback: it is
        swapped on every render, so it may close over this render's data.

        Nothing here imports Panel: any param.Parameterized class will do."""
        obj = self._parts.get(name) if self.in_place else None
        if obj is None or type(obj) is not cls:
            obj = cls(**{**(init or {}), **live})
            self._parts[name] = obj
            self.parts_created += 1
            if on_click is not None and not hasattr(obj, "_clicked"):
                # a Panel widget (Button, Tabulator) registers callbacks: register one that
                # calls whatever callback the latest render gave
                obj.on_click(lambda event, obj=obj: obj._lf_on_click(event))
        else:
            changed = {k: v for k, v in live.items() if not _same(getattr(obj, k), v)}
            if changed:
                obj.param.update(**changed)
        if on_click is not None:
            if hasattr(obj, "_clicked"):
                obj.on_click = on_click  # lensframe's clickable components read the attribute
            else:
                obj._lf_on_click = on_click
        return obj

    def keep(self, name: str, make):
        """An object built once per session by make() (a HoloViews stream, a DynamicMap) that
        a view then feeds new data on each render."""
        key = ("keep", name)
        obj = self._parts.get(key) if self.in_place else None
        if obj is None:
            obj = self._parts[key] = make()
            self.parts_created += 1
        return obj

    def get(self, name: str):
        """A focus field for this view: its pin if the spec pins it, else the shared focus."""
        pinned = getattr(self.view.p.pin, name, None)
        return pinned if pinned is not None else getattr(self.focus, name)

    def set(self, **fields) -> None:
        self.focus.update(**fields)

    @property
    def sample(self) -> int:
        """The focused dataset sample's index (also while a probe is focused: dataset-wide views
        stay on the dataset)."""
        return min(self.get("sample"), len(self.board.dataset) - 1)

    @property
    def probe(self):
        """The focused probe (lensframe.probes.Probe), or None when a dataset sample is focused.
        A view pinned to a sample shows that sample, never the probe."""
        if getattr(self.view.p.pin, "sample", None) is not None:
            return None
        return Probe(self.focus.text) if self.focus.text is not None else None

    @property
    def subject(self):
        """What the focus views show: the probe when one is focused, else the sample's index.
        Executor.focus, the lookups and interventions take either."""
        probe = self.probe
        return probe if probe is not None else self.sample

    def subject_label(self) -> str:
        """How a view's caption names what it shows (HTML-safe)."""
        import html

        probe = self.probe
        if probe is None:
            return f"sample <b class='lf-sample-index'>{self.sample}</b>"
        short = probe.text if len(probe.text) <= 40 else probe.text[:39] + "…"
        return f"probe <b class='lf-probe-name'>{html.escape(repr(short))}</b>"

    def row(self, node: Node) -> Result:
        """The focused subject's row of a per-sample dataset result (the logit lens): from the
        store for a dataset sample, from the probe's focus forward for a probe."""
        probe = self.probe
        if probe is None:
            res = self.result(node)
            return Result({k: v[self.sample] for k, v in res.arrays.items()}, res.meta)
        got = self.board.executor.focus(node.model, probe)
        if node not in got:  # its inputs (a tuned lens) are still being computed
            raise NotReady(node.label())
        return got[node]

    def result(self, node: Node) -> Result:
        res = self.board.result(node)
        if res is None:
            raise NotReady(node.label())
        return res

    def focus_result(self, node: Node) -> Result:
        return self.board.executor.focus(node.model, self.subject)[node]

    def lookup(self, node: Node, **args) -> Result:
        return self.board.executor.lookup(node, **args)

    def prepared(self, node: Node) -> Result:
        return self.board.executor.prepared(node)

    def layer(self, default: int = 0) -> int:
        """The focused layer clamped to the model (None = `default`)."""
        layer = self.get("layer")
        n = self.board.infos[self.view.model].n_layers
        return min(layer if layer is not None else default, n - 1)

    def decode(self, ids) -> list[str]:
        """Token ids as display strings, with this view's model's tokenizer."""
        tok = self.board.executor.model(self.view.model).tokenizer
        return tok.batch_decode([[int(i)] for i in ids], clean_up_tokenization_spaces=False)

    def tokens(self) -> list[str]:
        """Display strings of the focused sample's (or probe's) tokens for this view's model."""
        probe = self.probe
        if probe is not None:
            return self.board.executor.probe_tokens(self.view.model, probe)["strings"]
        res = self.result(self.view.tokens_node(self.board.spec.dataset.max_tokens))
        return res.meta["strings"][self.sample]

    def position(self, n_tokens: int) -> int:
        """The focused position clamped to the sample (None = last token)."""
        pos = self.get("position")
        return n_tokens - 1 if pos is None else max(0, min(pos, n_tokens - 1))


def _same(old, new) -> bool:
    """Whether setting a param to `new` would change nothing (lists compare by value; numpy
    arrays and other objects without a plain == by identity)."""
    if old is new:
        return True
    if type(old) is type(new) and hasattr(old, "equals"):  # a pandas frame: == compares cell by cell
        return bool(old.equals(new))
    try:
        return bool(old == new) and type(old) is type(new)
    except (TypeError, ValueError):
        return False


__all__ = ["FIELDS", "NotReady", "ViewContext"]
