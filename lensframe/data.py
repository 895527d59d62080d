"""Datasets: turn the spec's `dataset:` section into a fixed, fingerprinted list of texts.

Everything downstream (the executor, the store, the views) sees only a `Dataset`: texts, optional
labels, a display source per sample and a content fingerprint that keys the store. Reading is
strict: a wrong file, column or category is a `SpecError` blamed on the spec key that caused it,
so the user sees it next to the offending line of their YAML with a "did you mean" hint.

Sources (DatasetSpec.source):

- ``builtin:fortunes``  the Debian package ``fortunes``; the category (file name) is the label.
- ``jsonl:<file>``      one JSON object per line; ``text`` / ``label`` name the fields.
- ``csv:<file>``        header row; ``text`` / ``label`` name the columns.
- ``txt:<file>``        one text per non-empty line, or ``%``-separated records (fortune style).
- ``parquet:<file>``    a Parquet table; ``text`` / ``label`` name the columns.
- ``hf:<folder>``       a Hugging Face dataset written by ``save_to_disk`` (``split`` picks one of a
                        DatasetDict), or ``hf:<name>[@revision]`` from the local Hugging Face cache.
- inline ``texts:`` (and optional ``labels:``) instead of ``source``.

Relative paths resolve against the spec file's folder (``base_dir``), so a spec means the same
thing wherever it is run from.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import pathlib
import re
from dataclasses import dataclass
from typing import Optional

import numpy as np

from lensframe.errors import SpecError, did_you_mean
from lensframe.spec.schema import DatasetSpec

FORTUNES_DIR = pathlib.Path("/usr/share/games/fortunes")
FORTUNES_LABEL = "topic"  # the one label field of builtin:fortunes: each text's category file
FORTUNES_ENV = "LENSFRAME_FORTUNES_DIR"  # tests point this at a small fake fortunes folder

# The clearly topical categories: each file is about one subject, so the label means something
# (colours, group comparisons). Grab-bags like "fortunes", "cookie", "miscellaneous", ascii art and
# single-author files (zippy, pratchett, startrek) are left out. Only those present are used.
DEFAULT_FORTUNE_CATEGORIES = (
    "art", "computers", "drugs", "education", "food", "kids", "law", "linux", "literature",
    "love", "medicine", "news", "people", "pets", "politics", "science", "sports", "work",
)

SCHEMES = ("builtin", "jsonl", "csv", "txt", "parquet", "hf")
BUILTINS = ("fortunes",)

# Longer records are dropped before sampling: they are rare (long stories, ascii art) and would be
# mostly cut away by max_tokens anyway, so they only waste a slot of the sample.
MAX_CHARS = 2000


@dataclass(frozen=True)
class Dataset:
    """The selected samples, in a stable order, ready for tokenization."""

    texts: tuple[str, ...]
    labels: Optional[tuple[str, ...]]  # None when the spec names no label
    sources: tuple[str, ...]  # where each sample came from ("food#12", "data.jsonl:7"), for display
    fingerprint: str  # sha256 hex of the selected content + sampling settings
    notes: tuple[str, ...] = ()  # what reading left out (over-long or empty texts), for the user to see

    def __len__(self) -> int:
        return len(self.texts)


def _err(message: str, *path: str, hint: Optional[str] = None) -> SpecError:
    return SpecError(message, path=("dataset", *path), hint=hint)


# ---------------------------------------------------------------------------------------- entry


def load_dataset(spec: DatasetSpec, base_dir: pathlib.Path) -> Dataset:
    """Read the dataset the spec names, drop unusable records, then sample deterministically."""
    if (spec.source is None) == (spec.texts is None):
        raise _err(
            "give exactly one of `source` or `texts`"
            + (" (both are set)" if spec.source is not None else ""),
            hint="e.g. source: builtin:fortunes, or texts: [\"...\", \"...\"]",
        )
    if spec.texts is not None:
        kind = "inline"
        texts, labels, sources = _read_inline(spec)
    else:
        kind, texts, labels, sources = _read_source(spec, pathlib.Path(base_dir))

    # Drop empty and over-long records (keeping labels and sources aligned).
    keep = [i for i, t in enumerate(texts) if t.strip() and len(t) <= MAX_CHARS]
    notes = _dropped_notes(texts, sources)
    if not keep:
        where = ("source",) if spec.source is not None else ("texts",)
        raise _err(
            f"the dataset is empty: no non-empty texts of at most {MAX_CHARS} characters", *where
        )

    # Stratified first (per_label: at most that many of each label), so a topic comparison is not
    # dominated by the biggest category file; then the overall limit.
    if spec.per_label is not None:
        if labels is None:
            raise _err("per_label needs labels", "per_label", hint="set dataset.label (or inline labels)")
        rng = np.random.default_rng(spec.seed)
        by_label: dict = {}
        for i in keep:
            by_label.setdefault(labels[i], []).append(i)
        keep = sorted(j for group in by_label.values()
                      for j in (group if len(group) <= spec.per_label else rng.choice(group, spec.per_label, replace=False)))
        keep = [int(i) for i in keep]
    # Deterministic sample; sorted indices keep the original order, so output is stable.
    if spec.limit is not None and spec.limit < len(keep):
        rng = np.random.default_rng(spec.seed)
        chosen = np.sort(rng.choice(len(keep), size=spec.limit, replace=False))
        keep = [keep[int(i)] for i in chosen]

    texts = tuple(texts[i] for i in keep)
    labels = tuple(labels[i] for i in keep) if labels is not None else None
    sources = tuple(sources[i] for i in keep)
    return Dataset(texts, labels, sources, _fingerprint(kind, texts, labels, spec), notes)


def _dropped_notes(texts, sources) -> tuple[str, ...]:
    """Say which texts reading left out, never silently: over MAX_CHARS, or empty."""
    long = [sources[i] for i, t in enumerate(texts) if len(t) > MAX_CHARS]
    empty = sum(1 for t in texts if not t.strip())
    notes = []
    if long:
        shown = ", ".join(long[:5]) + (f" and {len(long) - 5} more" if len(long) > 5 else "")
        notes.append(f"left out {len(long)} text{'s' if len(long) > 1 else ''} longer than {MAX_CHARS:,} characters "
                     f"({shown})")
    if empty:
        notes.append(f"left out {empty} empty text{'s' if empty > 1 else ''}")
    return tuple(notes)


def _fingerprint(kind: str, texts, labels, spec: DatasetSpec) -> str:
    """Content hash: the same data from another path gives the same key; one changed char doesn't.

    Paths and display sources are deliberately left out; limit and seed are in so that the key
    states how the sample was drawn.
    """
    payload = {
        "kind": kind,
        "texts": list(texts),
        "labels": list(labels) if labels is not None else None,
        "limit": spec.limit,
        "seed": spec.seed,
        **({"per_label": spec.per_label} if spec.per_label is not None else {}),
    }
    blob = json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _read_inline(spec: DatasetSpec):
    texts = list(spec.texts or [])
    labels = None
    if spec.labels is not None:
        if len(spec.labels) != len(texts):
            raise _err(
                f"{len(spec.labels)} labels for {len(texts)} texts; give one label per text",
                "labels",
            )
        labels = [str(x) for x in spec.labels]
    return texts, labels, [f"texts[{i}]" for i in range(len(texts))]


def _read_source(spec: DatasetSpec, base_dir: pathlib.Path):
    scheme, sep, rest = spec.source.partition(":")
    if not sep or scheme not in SCHEMES:
        raise _err(
            f"unknown dataset source {spec.source!r}; known schemes: "
            "builtin:fortunes, jsonl:<file>, csv:<file>, txt:<file>, parquet:<file>, hf:<folder or name>",
            "source",
            hint=did_you_mean(scheme, SCHEMES) if sep else None,
        )
    if spec.labels is not None:
        raise _err("`labels` go with inline `texts`; with a `source` use `label: <column>`", "labels")
    if spec.categories is not None and spec.source != "builtin:fortunes":
        raise _err("`categories` applies to builtin:fortunes only", "categories")

    if scheme == "builtin":
        if rest not in BUILTINS:
            raise _err(
                f"unknown builtin dataset {rest!r}; builtin datasets: "
                + ", ".join(f"builtin:{b}" for b in BUILTINS),
                "source",
                hint=did_you_mean(rest, BUILTINS),
            )
        if spec.label is not None and spec.label != FORTUNES_LABEL:
            raise _err(f"builtin:fortunes has one label, {FORTUNES_LABEL!r} (its category file), not {spec.label!r}",
                       "label", hint=f"label: {FORTUNES_LABEL}")
        texts, labels, sources = _read_fortunes(spec)
        return spec.source, texts, labels if spec.label else None, sources

    if spec.split is not None and scheme != "hf":
        raise _err("`split` applies to hf: datasets only", "split")
    if scheme == "hf":
        from .data_tables import read_hf

        texts, labels, sources = _columns(*read_hf(rest, spec, base_dir), spec)
        return scheme, texts, labels, sources
    path = base_dir / pathlib.Path(rest).expanduser()
    if path.is_dir():
        raise _err(f"{path.resolve()} is a folder, not a file", "source")
    if not path.is_file():
        raise _err(f"file not found: {path.resolve()}", "source")
    shown = os.path.normpath(rest)  # as the user wrote it, for display
    if scheme == "txt":
        if spec.label:
            raise _err("txt files have no label column; use jsonl or csv for labels", "label")
        texts, sources = _read_txt(path, shown)
        return scheme, texts, None, sources
    if scheme == "parquet":
        from .data_tables import read_parquet

        texts, labels, sources = _columns(*read_parquet(path, shown, spec), spec)
        return scheme, texts, labels, sources
    try:
        rows, columns = (_read_jsonl if scheme == "jsonl" else _read_csv)(path, shown)
    except UnicodeDecodeError as exc:
        raise _err(f"{shown}: not UTF-8 text (byte {exc.start})", "source", hint="save the file as UTF-8") from None
    texts, labels, sources = _columns(rows, columns, spec)
    return scheme, texts, labels, sources


# ------------------------------------------------------------------------------------- fortunes


def _fortunes_root(root=None) -> pathlib.Path:
    if root is not None:
        return pathlib.Path(root)
    return pathlib.Path(os.environ.get(FORTUNES_ENV) or FORTUNES_DIR)


def fortunes_categories(root=None) -> list[str]:
    """Categories available on this machine (sorted); [] when fortunes isn't installed.

    `root` defaults to $LENSFRAME_FORTUNES_DIR or FORTUNES_DIR. Only regular files count: the
    `.dat` index files and the `.u8` symlink twins would duplicate or garble records.
    """
    root = _fortunes_root(root)
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_file()
        and not p.is_symlink()
        and not p.name.startswith(".")
        and p.suffix not in (".dat", ".u8")
    )


def _read_fortunes(spec: DatasetSpec):
    root = _fortunes_root()
    available = fortunes_categories(root)
    if not available:
        raise _err(
            f"builtin:fortunes needs the fortunes data, and {root} is missing or empty",
            "source",
            hint="apt-get install fortunes",
        )
    if spec.categories is None:
        categories = [c for c in DEFAULT_FORTUNE_CATEGORIES if c in available] or available
    else:
        if not spec.categories:
            raise _err("list at least one category", "categories")
        unknown = [c for c in spec.categories if c not in available]
        if unknown:
            raise _err(
                f"unknown fortunes categor{'y' if len(unknown) == 1 else 'ies'} "
                f"{', '.join(map(repr, unknown))}; available: {', '.join(available)}",
                "categories",
                hint=did_you_mean(unknown[0], available),
            )
        categories = list(dict.fromkeys(spec.categories))  # dedupe, keep order

    texts, labels, sources = [], [], []
    for cat in categories:
        raw = (root / cat).read_bytes().decode("utf-8", errors="replace")
        for n, record in enumerate(_split_percent(raw), start=1):
            text = _clean_fortune(record)
            if text:
                texts.append(text)
                labels.append(cat)
                sources.append(f"{cat}#{n}")
    return texts, labels, sources


_PERCENT = re.compile(r"^%[ \t]*$", re.MULTILINE)


def _split_percent(raw: str) -> list[str]:
    """Records of a fortune-style file: the text between lines that are exactly `%`."""
    return _PERCENT.split(raw.replace("\r\n", "\n"))


def _clean_fortune(record: str) -> str:
    """Tidy one fortune for a model: tabs only indent paragraphs and `-- Author` lines there.

    Leading tabs cost tokens and say nothing, so each line's tab indentation is dropped (newlines
    are kept). A few records are double-encoded UTF-8 ("donÃ¢ÂÂt"); those are repaired.
    """
    lines = [re.sub(r"^[ \t]*\t[ \t]*", "", line).rstrip() for line in record.split("\n")]
    return _fix_mojibake("\n".join(lines).strip())


def _fix_mojibake(text: str) -> str:
    """Undo UTF-8 read as Latin-1 (possibly twice); real Latin-1 text fails to decode and stays."""
    for _ in range(3):
        try:
            fixed = text.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            break
        if fixed == text:
            break
        text = fixed
    return text


# ---------------------------------------------------------------------------------------- files


def _read_txt(path: pathlib.Path, shown: str):
    """One text per non-empty line, or %-separated records when any line is exactly `%`."""
    lines = path.read_text(encoding="utf-8-sig", errors="replace").splitlines()
    percent = any(_PERCENT.fullmatch(line) for line in lines)
    texts, sources = [], []
    record, first = [], None  # current record's lines and its first non-blank line number
    for n, line in enumerate(lines + ["%"] if percent else lines, start=1):
        if not percent:
            if line.strip():
                texts.append(line.strip())
                sources.append(f"{shown}:{n}")
        elif _PERCENT.fullmatch(line):
            if first is not None:
                texts.append("\n".join(record).strip())
                sources.append(f"{shown}:{first}")
            record, first = [], None
        else:
            record.append(line)
            if first is None and line.strip():
                first = n
    return texts, sources


def _read_jsonl(path: pathlib.Path, shown: str):
    """Rows as (dict, display source), and the column names seen (first-seen order)."""
    rows, columns = [], {}
    with path.open(encoding="utf-8-sig") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise _err(f"{path}:{n}: not valid JSON ({e.msg})", "source") from None
            if not isinstance(row, dict):
                raise _err(f"{path}:{n}: expected one JSON object per line", "source")
            rows.append((row, f"{shown}:{n}"))
            columns.update(dict.fromkeys(row))
    return rows, list(columns)


def _read_csv(path: pathlib.Path, shown: str):
    """Rows as (dict, display source naming the row's first line), and the header's columns."""
    rows = []
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        start = 2
        for row in reader:
            rows.append(({k: v for k, v in row.items() if k is not None}, f"{shown}:{start}"))
            start = reader.line_num + 1
        columns = list(reader.fieldnames or [])
    return rows, columns


def _columns(rows, columns: list[str], spec: DatasetSpec):
    """Pull the text (and label) column out of the rows; a missing column is a spec error."""
    wanted = [("text", spec.text)] + ([("label", spec.label)] if spec.label else [])
    for key, col in wanted if columns else ():  # no columns at all: report "empty" instead
        if col not in columns:
            raise _err(
                f"no column {col!r}; columns: {', '.join(map(str, columns)) or '(none)'}",
                key,
                hint=did_you_mean(col, columns),
            )
    texts, labels, sources = [], [] if spec.label else None, []
    for row, source in rows:
        for key, col in wanted:
            if col not in row:
                raise _err(f"{source}: this row has no {col!r}", key)
        texts.append(_as_text(row[spec.text]))
        sources.append(source)
        if labels is not None:
            labels.append(_as_text(row[spec.label]))
    return texts, labels, sources


def _as_text(value) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)
