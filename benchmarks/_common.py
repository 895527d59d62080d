"""Shared helpers of the benchmarks: the machine's description and docs/BENCHMARKS.md sections.

Every benchmark writes one section ("## ...") of docs/BENCHMARKS.md and leaves the others alone;
the top of the file (title and intro) is rewritten each time so it always says the same thing.
"""
from __future__ import annotations

import os
import platform
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "BENCHMARKS.md"

INTRO = """# Benchmarks

Every figure on this page is a ratio against a baseline measured in the same run, on the same
machine, with the same settings: absolute seconds are shown for context only, because the machines
these ran on are small and shared (other processes were running), so only the ratios carry over.
Each section names the machine, the date and the exact command that produced it. To rerun
everything and rewrite this page, from the repository root:

    python benchmarks/run_all.py

(each benchmark in `benchmarks/` also runs alone; see `benchmarks/README.md`).
"""


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict:
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "n/a"
    return {
        "cores": usable,
        "cpu": cpu_model(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "load": load,
    }


def write_section(title: str, body: str, path: Path = DOC) -> Path:
    """Write (or replace) the section `## title` of the doc; other sections are kept."""
    path = Path(path)
    text = path.read_text() if path.exists() else ""
    # split into the top (before the first "## ") and "## " sections
    parts = re.split(r"(?m)^(?=## )", text)
    sections = [p for p in parts if p.startswith("## ")]
    heading = f"## {title}"
    new = f"{heading}\n\n{body.strip()}\n"
    for i, s in enumerate(sections):
        if s.splitlines()[0].strip() == heading:
            sections[i] = new
            break
    else:
        sections.append(new)
    out = INTRO.rstrip() + "\n\n" + "\n".join(s.rstrip() + "\n" for s in sections)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(out)
    os.replace(tmp, path)
    return path


def ensure_intro(path: Path = DOC) -> Path:
    """Rewrite only the top of the doc (creating it if needed), keeping every section."""
    path = Path(path)
    text = path.read_text() if path.exists() else ""
    sections = [p for p in re.split(r"(?m)^(?=## )", text) if p.startswith("## ")]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(INTRO.rstrip() + "\n\n" + "\n".join(s.rstrip() + "\n" for s in sections))
    return path

