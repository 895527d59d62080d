"""lensframe: linked, interactive interpretability dashboards for transformer LMs from a YAML spec.

    import lensframe as lf
    board = lf.load("specs/demo.yaml")   # validate + compile; no weights loaded yet
    board.compute()                      # dataset passes, with progress
    board.focus.update(sample=3, position=5)
    board.panel()                        # the Panel layout
"""
from __future__ import annotations

import os as _os

__version__ = "0.1.0"

# From a source checkout, views/ and server/ sit beside lensframe/ and are installed as
# lensframe.views and lensframe.server (pyproject's package-dir). Extending __path__ makes
# `import lensframe.views` work from the repo root without installing, too.
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_root, "views", "base.py")) and not _os.path.isdir(
    _os.path.join(_os.path.dirname(__file__), "views")
):
    __path__.append(_root)  # type: ignore[name-defined]


def load(path, *, allow_local_views: bool = False, **kwargs):
    """Validate and compile a spec file; returns a Board (no weights are loaded yet).

    allow_local_views=True lets the spec name view classes in Python files beside it
    (`type: ./my_views.py:MyView`), which runs their code: only for a spec you trust. Other kwargs
    (cache_dir, device, trust_remote_code) go to Board()."""
    from .board import Board

    return Board.from_file(path, allow_local_views=allow_local_views, **kwargs)


def __getattr__(name):
    if name == "Board":
        from .board import Board

        return Board
    raise AttributeError(name)
