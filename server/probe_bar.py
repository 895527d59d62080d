"""The probe box at the top of every dashboard: ask the model about typed text.

One prompt becomes this session's focused sample (focus.text); several lines, or a template with `{}`
and fillers, become its probe set (focus.probes, shown by a probes view) with the first one focused.
A bad input (empty text, a template without `{}`, ...) is a message in the bar; nothing else on the
page changes. "Back to the dataset" leaves the probe in one click.
"""
from __future__ import annotations

import html

import panel as pn

from lensframe.probes import ProbeError, ask as ask_probes

BAR_CSS = """
.lf-probe-message { font-size: 12px; min-height: 16px; }
.lf-probe-error { color: #8a1c1c; }
.lf-probe-note { color: #7a5a00; }
.lf-probe-ok { color: #2e6b3a; }
"""


def build_probe_bar(board, focus, notices=(), vertical: bool = False) -> pn.Column:
    """The probe box; vertical: stacked for a narrow sidebar (the served page's), else one row."""
    text = pn.widgets.TextAreaInput(
        placeholder="Ask the model: type a prompt (one per line for a set; a template with {} and fillers below)",
        rows=3 if vertical else 2, auto_grow=True, max_rows=6, sizing_mode="stretch_width", css_classes=["lf-probe-text"],
        value=focus.text or "")  # a page opened on a probe (?text=...) shows it, ready to edit
    fillers = pn.widgets.TextInput(placeholder="fillers for {}: Paris, Rome", css_classes=["lf-probe-fillers"],
                                   **({"sizing_mode": "stretch_width"} if vertical else {"width": 240}))
    ask = pn.widgets.Button(label="Ask", color="primary", width=70, css_classes=["lf-probe-ask"])
    back = pn.widgets.Button(label="Back to the dataset", css_classes=["lf-probe-back"], visible=focus.text is not None,
                             **({"sizing_mode": "stretch_width"} if vertical else {"width": 160}))
    message = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["lf-probe-message"], stylesheets=[BAR_CSS])
    first_model = next(iter(board.spec.models))
    if notices:
        message.object = f"<div class='lf-probe-note'>{html.escape(' · '.join(notices))}</div>"

    def say(kind: str, words: str) -> None:
        message.object = f"<div class='lf-probe-{kind}'>{html.escape(words)}</div>" if words else ""

    def on_ask(_):
        try:
            probes, notes = ask_probes(focus, _typed(text), _typed(fillers))  # notes: what the text lost
        except ProbeError as err:
            say("error", str(err))
            return
        cut = board.executor.probe_tokens(first_model, probes[0])
        if cut["cut"]:
            notes.append(f"cut to the first {cut['limit']} tokens (the spec's run.probe_max_tokens or the model's context): "
                         f"{cut['cut']} more not shown")
        told = ([f"{len(probes)} probes asked; the first is focused"] if len(probes) > 1 else []) + notes
        say("note" if notes else "ok", " · ".join(told))

    def on_back(_):
        focus.param.update(text=None, position=None)
        say("", "")

    ask.on_click(on_ask)
    back.on_click(on_back)
    focus.param.watch(lambda e: setattr(back, "visible", e.new is not None), "text")
    if vertical:
        rows = [text, pn.Row(fillers, ask, sizing_mode="stretch_width"), back]
    else:
        rows = [pn.Row(text, fillers, ask, back, sizing_mode="stretch_width")]
    return pn.Column(*rows, message, sizing_mode="stretch_width", css_classes=["lf-probe-bar"])


def _typed(widget) -> str:
    """What is in an input now: value_input follows every keystroke, value only a blur or Enter."""
    typed = getattr(widget, "value_input", None)
    return typed if typed is not None else widget.value
