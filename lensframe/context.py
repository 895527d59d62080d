"""What a view sees at render time: the focus (with its pins applied) and results by node."""
from __future__ import annotations

from .focus import FIELDS, Focus
from .graph import Node
from .ops.base import Result


class NotReady(Exception):
    """A dataset result the view needs has not been computed yet (the dashboard shows progress)."""


class ViewContext:
    def __init__(self, board, focus: Focus, view):
        self.board, self.focus, self.view = board, focus, view
        self.state: dict = {}  # this view's own state in this session (e.g. neuron edits)

    def get(self, name: str):
        """A focus field for this view: its pin if the spec pins it, else the shared focus."""
        pinned = getattr(self.view.p.pin, name, None)
        return pinned if pinned is not None else getattr(self.focus, name)

    def set(self, **fields) -> None:
        self.focus.update(**fields)

    @property
    def sample(self) -> int:
        return min(self.get("sample"), len(self.board.dataset) - 1)

    def result(self, node: Node) -> Result:
        res = self.board.result(node)
        if res is None:
            raise NotReady(node.label())
        return res

    def focus_result(self, node: Node) -> Result:
        return self.board.executor.focus(node.model, self.sample)[node]

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
        """Display strings of the focused sample's tokens for this view's model."""
        res = self.result(self.view.tokens_node(self.board.spec.dataset.max_tokens))
        return res.meta["strings"][self.sample]

    def position(self, n_tokens: int) -> int:
        """The focused position clamped to the sample (None = last token)."""
        pos = self.get("position")
        return n_tokens - 1 if pos is None else max(0, min(pos, n_tokens - 1))


__all__ = ["FIELDS", "NotReady", "ViewContext"]
