"""lensframe: linked, interactive interpretability dashboards for transformer LMs from a YAML spec.

    import lensframe as lf
    board = lf.load("specs/demo.yaml")   # validate + compile; no weights loaded yet
    board.compute()                      # dataset passes, with progress
    board.focus.update(sample=3, position=5)
    board.panel()                        # the Panel layout

    # app.py, served with `panel serve app.py --dev`
    lf.panel_app("specs/demo.yaml").servable()
"""
from __future__ import annotations

import threading as _threading

__version__ = "0.1.0"

def load(path, *, allow_local_views: bool = False, **kwargs):
    """Validate and compile a spec file; returns a Board (no weights are loaded yet).

    allow_local_views=True lets the spec name view classes in Python files beside it
    (`type: ./my_views.py:MyView`), which runs their code: only for a spec you trust. Other kwargs
    (cache_dir, device, trust_remote_code) go to Board()."""
    from .board import Board

    return Board.from_file(path, allow_local_views=allow_local_views, **kwargs)


# panel_app's boards, one per (resolved spec path, board options) and process: `panel serve`
# runs app.py again for every session, and each would otherwise load the models again.
_PANEL_BOARDS: dict = {}
_PANEL_LOCK = _threading.Lock()


def panel_app(spec, *, watch: bool = False, allow_local_views: bool = False, **kwargs):
    """The dashboard of `spec` as one session's page (the template `lensframe serve` serves), for an
    app.py run by `panel serve app.py --dev`:

        import lensframe
        lensframe.panel_app("specs/demo.yaml").servable()

    The board is loaded once per process, on the first call (module-level cache keyed by the
    resolved spec path and the options); its dataset passes start then, in the background, with
    progress in the pages. Each call builds a new page with its own focus (from the page's address,
    like `lensframe serve`). watch=True: saving the spec rebuilds the board and moves every open
    page to it, as `lensframe serve --watch` does. Other kwargs (cache_dir, device,
    trust_remote_code) go to Board()."""
    from pathlib import Path

    key = (str(Path(spec).resolve()), allow_local_views, tuple(sorted((k, str(v)) for k, v in kwargs.items())))
    with _PANEL_LOCK:
        live = _PANEL_BOARDS.get(key)
        if live is None:
            from .server.app import ComputeJob
            from .server.watch import LiveSpec

            board = load(spec, allow_local_views=allow_local_views, **kwargs)
            live = _PANEL_BOARDS[key] = LiveSpec(board, ComputeJob(board).start(), allow_local_views=allow_local_views)
        if watch:
            live.watch()
    from .server.template import SessionPage

    return SessionPage(live).template


def __getattr__(name):
    if name == "Board":
        from .board import Board

        return Board
    raise AttributeError(name)
