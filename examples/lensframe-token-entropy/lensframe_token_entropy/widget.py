"""The token strip the token_entropy view draws with (a Panel JSComponent; imported only at render)."""
from __future__ import annotations

import param
from panel.custom import JSComponent


class EntropyStrip(JSComponent):
    """Tokens as chips with their value under them, shaded; click -> on_click(index).

    Stable CSS classes for styling and tests: lf-token-entropy (the strip), lf-te-token (a token,
    data-position = its index, lf-selected when focused), lf-te-value (its number).
    """

    tokens = param.List(default=[])
    shade = param.List(default=[])
    labels = param.List(default=[])
    selected = param.Integer(default=-1)

    _esm = """
    export function render({ model, el }) {
      const box = document.createElement('div');
      box.className = 'lf-token-entropy';
      model.tokens.forEach((t, i) => {
        const s = document.createElement('span');
        s.className = 'lf-te-token' + (i === model.selected ? ' lf-selected' : '');
        s.dataset.position = i;
        const v = model.shade[i];
        if (v !== null && v !== undefined) s.style.background = `rgba(111, 66, 193, ${0.08 + 0.8 * v})`;
        if (v !== null && v !== undefined && v > 0.55) s.style.color = 'white';
        const text = document.createElement('span');
        text.textContent = t.replace(/\\n/g, '\\u21b5').replace(/ /g, '\\u00a0') || '\\u2205';
        const num = document.createElement('span');
        num.className = 'lf-te-value';
        num.textContent = model.labels[i];
        s.append(text, num);
        s.title = `position ${i}: ${JSON.stringify(t)}`;
        s.addEventListener('click', () => model.send_msg({index: i}));
        box.appendChild(s);
      });
      el.appendChild(box);
    }
    """
    _stylesheets = ["""
    :host { font-size: 12px; }
    .lf-token-entropy { font-family: ui-monospace, monospace; line-height: 1.3; }
    .lf-te-token { display: inline-flex; flex-direction: column; align-items: center; margin: 2px 1px;
                   padding: 1px 2px; border-radius: 3px; border: 1px solid #ddd; cursor: pointer; white-space: pre; }
    .lf-te-token:hover { border-color: #333; }
    .lf-te-token.lf-selected { outline: 2px solid #1f6fd1; border-color: #1f6fd1; }
    .lf-te-value { font-size: 9px; opacity: 0.8; }
    """]

    def __init__(self, on_click=None, **params):
        super().__init__(**params)
        if on_click is not None:
            self.on_msg(lambda event: _atomically(on_click, event.data["index"]))


def _atomically(fn, index: int) -> None:
    """Run the focus change with document updates held, so every linked view changes in one step."""
    from panel.io import hold

    with hold():
        fn(index)
