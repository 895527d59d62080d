"""Progress of long work, one interface for every caller: tqdm in the terminal (progress=True), a
callback(fraction, message) (the served page's bar), or nothing (progress=False/None)."""
from __future__ import annotations


class _NoBar:
    def update(self, n): ...
    def close(self): ...


class _CallbackBar:
    def __init__(self, fn, total, desc):
        self.fn, self.total, self.desc, self.n = fn, max(total, 1), desc, 0
        fn(0.0, desc)

    def update(self, n):
        self.n += n
        self.fn(self.n / self.total, self.desc)

    def close(self):
        self.fn(1.0, self.desc)


def progress_bar(progress, total: int, desc: str):
    """tqdm in the terminal (progress=True), a callback(fraction, message) bar, or nothing."""
    if progress is True:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit="batch")
    if callable(progress):
        return _CallbackBar(progress, total, desc)
    return _NoBar()
