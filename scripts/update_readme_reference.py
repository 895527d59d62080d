"""Rewrite the README's spec reference from the pydantic models (tests/test_readme.py checks it)."""
from pathlib import Path

from lensframe.spec.reference import BEGIN, END, markdown

readme = Path(__file__).resolve().parents[1] / "README.md"
text = readme.read_text()
readme.write_text(text[: text.index(BEGIN)] + markdown() + text[text.index(END) + len(END) :])
print(f"updated {readme}")
