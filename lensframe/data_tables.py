"""Datasets kept as tables by the Python data tools: Parquet files and Hugging Face `datasets`
(a folder written by `save_to_disk`, or a dataset name the local Hugging Face cache holds).

Both are read as rows of {column: value} with a display source per row, and the column list, so
lensframe.data checks the `text` and `label` columns and samples them like a jsonl or csv file.
Only the needed columns are read. A `datasets` ClassLabel column gives its names, not its ints.
pyarrow and `datasets` are imported here only, when a spec names such a source.
"""
from __future__ import annotations

import pathlib

from lensframe.errors import SpecError, did_you_mean

INSTALL_HINT = "pip install datasets  (it brings pyarrow)"


def _err(message: str, *path: str, hint: str | None = None) -> SpecError:
    return SpecError(message, ("dataset",) + path, hint)


def _wanted(spec) -> list[str]:
    return [spec.text] + ([spec.label] if spec.label else [])


def _check_columns(columns: list[str], spec) -> None:
    for key, col in [("text", spec.text)] + ([("label", spec.label)] if spec.label else []):
        if col not in columns:
            raise _err(f"no column {col!r}; columns: {', '.join(map(str, columns)) or '(none)'}", key,
                       hint=did_you_mean(col, columns))


def read_parquet(path: pathlib.Path, shown: str, spec):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise _err("parquet: needs pyarrow, which is not installed", "source", hint=INSTALL_HINT) from None
    try:
        file = pq.ParquetFile(path)
    except Exception as exc:  # not a parquet file, a truncated one
        raise _err(f"{shown}: not a readable parquet file ({str(exc).splitlines()[0]})", "source") from None
    columns = list(file.schema_arrow.names)
    _check_columns(columns, spec)
    table = file.read(columns=list(dict.fromkeys(_wanted(spec))))
    data = table.to_pydict()
    rows = [({c: data[c][i] for c in data}, f"{shown}:{i}") for i in range(table.num_rows)]
    return rows, columns


def read_hf(rest: str, spec, base_dir: pathlib.Path):
    """hf:<folder>  (save_to_disk output, relative to the spec), or hf:<name>[@revision] from the
    local Hugging Face cache (or the hub where reachable); `split` picks a split (default train)."""
    try:
        import datasets
    except ImportError:
        raise _err("hf: datasets need the `datasets` package, which is not installed", "source",
                   hint=INSTALL_HINT) from None
    name, _, revision = rest.partition("@")
    folder = base_dir / pathlib.Path(name).expanduser()
    if folder.is_dir():
        try:
            loaded = datasets.load_from_disk(str(folder))
        except Exception as exc:
            raise _err(f"{folder.resolve()}: not a dataset saved with save_to_disk ({str(exc).splitlines()[0]})",
                       "source") from None
        if isinstance(loaded, datasets.DatasetDict):
            splits = list(loaded)
            split = spec.split or ("train" if "train" in loaded else None)
            if split not in loaded:
                raise _err(f"split {split!r} is not in {name}; splits: {', '.join(splits)}",
                           "split" if spec.split else "source",
                           hint=did_you_mean(split, splits) if spec.split else f"split: {splits[0]}")
            table = loaded[split]
        else:
            if spec.split is not None:
                raise _err(f"{name} is one saved split (a Dataset, not a DatasetDict): it has no splits", "split",
                           hint="remove `split`")
            split, table = None, loaded
    else:
        split = spec.split or "train"
        try:
            table = datasets.load_dataset(name, split=split, revision=revision or None)
        except Exception as exc:  # not cached and no hub, no such dataset, no such split
            raise _err(f"cannot load the Hugging Face dataset {name!r} (split {split!r}): "
                       f"{str(exc).splitlines()[0]}", "source",
                       hint="a folder written by save_to_disk (relative to the spec), or a dataset name the local "
                            "Hugging Face cache holds (load it once where the hub is reachable)") from None
    columns = list(table.column_names)
    _check_columns(columns, spec)
    table = table.select_columns(list(dict.fromkeys(_wanted(spec))))
    names = {}
    for col in _wanted(spec):  # a ClassLabel column holds ints: show its names
        feature = table.features.get(col)
        if isinstance(feature, datasets.ClassLabel):
            names[col] = feature.names
    data = table.to_dict()
    shown = f"hf:{name}" + (f"[{split}]" if split else "")
    rows = []
    for i in range(len(table)):
        row = {c: (names[c][v] if c in names and isinstance(v, int) else v) for c, v in
               ((c, data[c][i]) for c in data)}
        rows.append((row, f"{shown}:{i}"))
    return rows, columns
