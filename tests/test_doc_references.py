"""Every document the code points to is in the repository: a `docs/NAME.md` in a comment or
docstring exists, a section it names in quotes after it is one of its headings, and nothing points
to design notes that live outside the repository."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [p for d in ("lensframe", "views", "server", "benchmarks", "scripts", "examples") for p in (ROOT / d).rglob("*.py")]
REFERENCE = re.compile(r"docs/(?P<doc>[A-Z_]+\.md)(?:,?\s+\"(?P<section>[^\"]+)\")?")


def test_code_points_only_to_documents_in_the_repository():
    missing, outside = [], []
    for path in SOURCES:
        text = path.read_text()
        where = path.relative_to(ROOT)
        if re.search(r"DESIGN\.md|\.\./shared", text):
            outside.append(str(where))
        for m in REFERENCE.finditer(text):
            doc = ROOT / "docs" / m["doc"]
            if not doc.is_file():
                missing.append(f"{where}: docs/{m['doc']}")
                continue
            section = m["section"] and " ".join(m["section"].split())  # a name may wrap to the next line
            headings = [line.lstrip("#").strip() for line in doc.read_text().splitlines() if line.startswith("#")]
            if section and not any(h.startswith(section) or section in h for h in headings):
                missing.append(f"{where}: docs/{m['doc']} section {section!r}")
    assert not outside, f"pointing outside the repository: {outside}"
    assert not missing, missing
    assert len(SOURCES) > 50
