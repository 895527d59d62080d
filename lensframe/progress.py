"""Progress of long work, one interface for every caller: tqdm in the terminal (progress=True), a
callback(fraction, message) (the served page's bar), or nothing (progress=False/None)."""
from __future__ import annotations


class _NoBar:
    def update(self, n): ...
    def close(self): ...


class _CallbackBar:
    def __init__(self, fn, total, desc, initial=0):
        self.fn, self.total, self.desc, self.n = fn, max(total, 1), desc, initial
        fn(initial / self.total, desc)

    def update(self, n):
        self.n += n
        self.fn(self.n / self.total, self.desc)

    def close(self):
        self.fn(1.0, self.desc)


def progress_bar(progress, total: int, desc: str, initial: int = 0):
    """tqdm in the terminal (progress=True), a callback(fraction, message) bar, or nothing.
    initial: the part already done (a pass resumed from a checkpoint)."""
    if progress is True:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit="batch", initial=initial)
    if callable(progress):
        return _CallbackBar(progress, total, desc, initial)
    return _NoBar()
