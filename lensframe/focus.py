"""The Focus: what the user is looking at, shared by all views of one browser session.

A plain param class (no Panel), so notebooks and tests can drive it too. Views read fields and set
them on click; `pin:` in a view's params overrides a field for that view only.
"""
from __future__ import annotations

import param

FIELDS = ("model", "sample", "text", "position", "layer", "head", "neuron", "cluster", "text_cluster", "texts",
          "neurons", "probes")


class Focus(param.Parameterized):
    model = param.String(default=None, allow_None=True, doc="model name in the spec")
    sample = param.Integer(default=0, bounds=(0, None), doc="dataset index")
    text = param.String(default=None, allow_None=True,
                        doc="a probe: typed text focused in place of the dataset sample (None = the sample)")
    position = param.Integer(default=None, allow_None=True, doc="token position; None = last token")
    layer = param.Integer(default=None, allow_None=True, doc="block index; None = the view's default")
    head = param.Integer(default=0, bounds=(0, None))
    neuron = param.Integer(default=None, allow_None=True)
    cluster = param.Integer(default=None, allow_None=True, doc="a neuron cluster")
    text_cluster = param.Integer(default=None, allow_None=True, doc="a cluster of texts")
    # Selections (linked brushing): a lasso on a cluster map picks a group that other views
    # describe. Sorted and without repeats, so the same group is the same value (one memo entry).
    texts = param.List(default=[], item_type=int, doc="selected dataset samples (a lasso on the text map); [] = none")
    neurons = param.List(default=[], item_type=list,
                         doc="selected neurons as [layer, index] pairs (a lasso on the neuron map); [] = none")
    probes = param.List(default=[], doc="this session's probe set (lensframe.probes.Probe), shown by the probes view")

    def values(self) -> dict:
        return {f: getattr(self, f) for f in FIELDS}

    def update(self, **fields) -> None:
        unknown = set(fields) - set(FIELDS)
        if unknown:
            raise KeyError(f"unknown focus field(s): {', '.join(sorted(unknown))}; fields: {', '.join(FIELDS)}")
        self.param.update(**fields)
