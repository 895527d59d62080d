"""Tests for lensframe.data: sources, columns, sampling, fingerprints and spec errors."""
from __future__ import annotations

import json
import os
import pathlib

import pytest

from lensframe.data import (
    DEFAULT_FORTUNE_CATEGORIES,
    FORTUNES_DIR,
    MAX_CHARS,
    Dataset,
    fortunes_categories,
    load_dataset,
)
from lensframe.errors import SpecError
from lensframe.spec.schema import DatasetSpec


def spec(**kw) -> DatasetSpec:
    return DatasetSpec(**kw)


def spec_error(ds: DatasetSpec, base: pathlib.Path) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_dataset(ds, base)
    return info.value


@pytest.fixture
def fortunes(tmp_path, monkeypatch) -> pathlib.Path:
    """A small fake fortunes folder, with the .dat/.u8 clutter of the real one."""
    root = tmp_path / "fortunes"
    root.mkdir()
    for cat, n in (("food", 12), ("science", 8), ("zippy", 5)):
        records = [f"{cat} fortune number {i}\n\t\t-- Someone" for i in range(n)]
        (root / cat).write_text("\n%\n".join(records) + "\n%\n")
        (root / f"{cat}.dat").write_bytes(b"\x00\x01binary")
        os.symlink(cat, root / f"{cat}.u8")
    (root / "subdir").mkdir()
    monkeypatch.setenv("LENSFRAME_FORTUNES_DIR", str(root))
    return root


# --------------------------------------------------------------------------------- fortunes


def test_fortunes_categories_skip_dat_u8_and_dirs(fortunes):
    assert fortunes_categories() == ["food", "science", "zippy"]


def test_fortunes_default_categories_with_labels(fortunes):
    ds = load_dataset(spec(source="builtin:fortunes", label="topic", limit=None), fortunes)
    assert isinstance(ds, Dataset)
    # zippy is not topical: not in the defaults
    assert set(ds.labels) == {"food", "science"}
    assert len(ds) == 20
    assert ds.texts[0] == "food fortune number 0\n-- Someone"  # tabs collapsed, newline kept
    assert ds.sources[0] == "food#1"
    assert all(s.startswith(l + "#") for s, l in zip(ds.sources, ds.labels))


def test_fortunes_no_label_key_means_no_labels(fortunes):
    ds = load_dataset(spec(source="builtin:fortunes", limit=None), fortunes)
    assert ds.labels is None and len(ds) == 20


def test_fortunes_explicit_categories(fortunes):
    ds = load_dataset(
        spec(source="builtin:fortunes", categories=["zippy"], label="topic"), fortunes
    )
    assert ds.labels == ("zippy",) * 5


def test_fortunes_label_is_topic(fortunes):
    """builtin:fortunes has one label field; a misspelt one is an error at `label`, not ignored."""
    issue = spec_error(spec(source="builtin:fortunes", label="topc"), fortunes).issues[0]
    assert issue.path == ("dataset", "label") and "'topic'" in issue.message and issue.hint == "label: topic"


def test_fortunes_unknown_category_hint(fortunes):
    err = spec_error(spec(source="builtin:fortunes", categories=["food", "sciense"]), fortunes)
    issue = err.issues[0]
    assert issue.path == ("dataset", "categories")
    assert "sciense" in issue.message and "zippy" in issue.message
    assert issue.hint == "did you mean 'science'?"


def test_fortunes_missing_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LENSFRAME_FORTUNES_DIR", str(tmp_path / "nope"))
    err = spec_error(spec(source="builtin:fortunes"), tmp_path)
    assert err.issues[0].path == ("dataset", "source")
    assert "apt-get install fortunes" in err.issues[0].hint


def test_fortunes_percent_records_and_empty_records(fortunes):
    (fortunes / "food").write_text("one\n%\n\n%\n  two\n  lines\n%\n")
    ds = load_dataset(spec(source="builtin:fortunes", categories=["food"]), fortunes)
    assert ds.texts == ("one", "two\n  lines")
    assert ds.sources == ("food#1", "food#3")


@pytest.mark.skipif(not FORTUNES_DIR.is_dir(), reason="Debian package fortunes not installed")
def test_real_fortunes(monkeypatch):
    monkeypatch.delenv("LENSFRAME_FORTUNES_DIR", raising=False)
    available = fortunes_categories()
    assert "food" in available and not any(c.endswith((".dat", ".u8")) for c in available)
    ds = load_dataset(spec(source="builtin:fortunes", label="topic", limit=50), pathlib.Path("."))
    assert len(ds) == 50
    assert set(ds.labels) <= set(DEFAULT_FORTUNE_CATEGORIES)
    assert all(0 < len(t) <= MAX_CHARS and "\n\t" not in t for t in ds.texts)
    assert not any(t.startswith(("\t", " ")) for t in ds.texts)


# --------------------------------------------------------------------------------- sampling


def test_limit_seed_determinism(fortunes):
    a = load_dataset(spec(source="builtin:fortunes", limit=7, seed=1), fortunes)
    b = load_dataset(spec(source="builtin:fortunes", limit=7, seed=1), fortunes)
    c = load_dataset(spec(source="builtin:fortunes", limit=7, seed=2), fortunes)
    assert len(a) == 7
    assert a == b
    assert a.texts != c.texts and a.fingerprint != c.fingerprint
    # original order is kept: food before science, record numbers ascending within a file
    order = [(s.split("#")[0], int(s.split("#")[1])) for s in a.sources]
    assert order == sorted(order)


def test_limit_larger_than_data_keeps_all(tmp_path):
    ds = load_dataset(spec(texts=["a", "b", "c"], limit=10), tmp_path)
    assert ds.texts == ("a", "b", "c")


def test_overlong_and_empty_records_dropped_before_sampling(tmp_path):
    ds = load_dataset(spec(texts=["ok", "x" * (MAX_CHARS + 1), "  ", "fine"]), tmp_path)
    assert ds.texts == ("ok", "fine")
    assert ds.sources == ("texts[0]", "texts[3]")


# ------------------------------------------------------------------------------------ files


def write_jsonl(path: pathlib.Path, rows) -> pathlib.Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_jsonl_text_and_label_columns(tmp_path):
    write_jsonl(
        tmp_path / "d.jsonl",
        [{"body": "hello", "tag": "a"}, {"body": "world", "tag": 2}],
    )
    ds = load_dataset(spec(source="jsonl:d.jsonl", text="body", label="tag"), tmp_path)
    assert ds.texts == ("hello", "world")
    assert ds.labels == ("a", "2")
    assert ds.sources == ("d.jsonl:1", "d.jsonl:2")


def test_jsonl_wrong_text_column_did_you_mean(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [{"texts": "hello", "label": "a"}])
    err = spec_error(spec(source="jsonl:d.jsonl"), tmp_path)
    issue = err.issues[0]
    assert issue.path == ("dataset", "text")
    assert "'text'" in issue.message and "texts, label" in issue.message
    assert issue.hint == "did you mean 'texts'?"


def test_csv_text_and_label_columns(tmp_path):
    (tmp_path / "d.csv").write_text('text,topic\nhello,a\n"multi\nline",b\n')
    ds = load_dataset(spec(source="csv:d.csv", label="topic"), tmp_path)
    assert ds.texts == ("hello", "multi\nline")
    assert ds.labels == ("a", "b")
    assert ds.sources == ("d.csv:2", "d.csv:3")


def test_csv_wrong_label_column_did_you_mean(tmp_path):
    (tmp_path / "d.csv").write_text("text,topic\nhello,a\n")
    err = spec_error(spec(source="csv:d.csv", label="topc"), tmp_path)
    issue = err.issues[0]
    assert issue.path == ("dataset", "label")
    assert "'topc'" in issue.message and "text, topic" in issue.message
    assert issue.hint == "did you mean 'topic'?"


def test_txt_lines(tmp_path):
    (tmp_path / "d.txt").write_text("first line\n\n  second line  \n")
    ds = load_dataset(spec(source="txt:d.txt"), tmp_path)
    assert ds.texts == ("first line", "second line")
    assert ds.labels is None
    assert ds.sources == ("d.txt:1", "d.txt:3")


def test_txt_percent_records(tmp_path):
    (tmp_path / "d.txt").write_text("one\nstill one\n%\n\ntwo\n%\n%\nthree")
    ds = load_dataset(spec(source="txt:d.txt"), tmp_path)
    assert ds.texts == ("one\nstill one", "two", "three")
    assert ds.sources == ("d.txt:1", "d.txt:5", "d.txt:8")


def test_txt_with_label_is_an_error(tmp_path):
    (tmp_path / "d.txt").write_text("a\n")
    err = spec_error(spec(source="txt:d.txt", label="topic"), tmp_path)
    assert err.issues[0].path == ("dataset", "label")


def test_relative_path_resolves_against_base_dir(tmp_path, monkeypatch):
    (tmp_path / "specs" / "data").mkdir(parents=True)
    (tmp_path / "specs" / "data" / "d.txt").write_text("hello\n")
    monkeypatch.chdir(tmp_path)  # cwd is elsewhere: must not matter
    ds = load_dataset(spec(source="txt:./data/d.txt"), tmp_path / "specs")
    assert ds.texts == ("hello",)
    assert ds.sources == ("data/d.txt:1",)


def test_absolute_path(tmp_path):
    p = tmp_path / "abs.txt"
    p.write_text("x\n")
    ds = load_dataset(spec(source=f"txt:{p}"), pathlib.Path("/somewhere/else"))
    assert ds.texts == ("x",)


def test_missing_file(tmp_path):
    err = spec_error(spec(source="jsonl:nope.jsonl"), tmp_path)
    issue = err.issues[0]
    assert issue.path == ("dataset", "source")
    assert "file not found" in issue.message
    assert str((tmp_path / "nope.jsonl").resolve()) in issue.message


def test_unknown_scheme(tmp_path):
    err = spec_error(spec(source="parqet:d.parquet"), tmp_path)
    issue = err.issues[0]
    assert issue.path == ("dataset", "source")
    for scheme in ("builtin:fortunes", "jsonl:", "csv:", "txt:"):
        assert scheme in issue.message


def test_bad_jsonl_line(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "ok"}\n{oops\n')
    err = spec_error(spec(source="jsonl:d.jsonl"), tmp_path)
    assert err.issues[0].path == ("dataset", "source")
    assert "d.jsonl:2" in err.issues[0].message


@pytest.mark.parametrize(
    "name,content,source",
    [("d.txt", "\n \n", "txt:d.txt"), ("d.jsonl", "", "jsonl:d.jsonl"), ("d.csv", "text\n", "csv:d.csv")],
)
def test_empty_dataset(tmp_path, name, content, source):
    (tmp_path / name).write_text(content)
    err = spec_error(spec(source=source), tmp_path)
    assert err.issues[0].path[0] == "dataset"
    assert "empty" in err.issues[0].message


# ----------------------------------------------------------------------------------- inline


def test_inline_texts_with_labels(tmp_path):
    ds = load_dataset(spec(texts=["a b", "c d"], labels=["x", "y"], label="ignored"), tmp_path)
    assert ds.texts == ("a b", "c d")
    assert ds.labels == ("x", "y")
    assert ds.sources == ("texts[0]", "texts[1]")


def test_inline_labels_length_mismatch(tmp_path):
    err = spec_error(spec(texts=["a", "b"], labels=["x"]), tmp_path)
    assert err.issues[0].path == ("dataset", "labels")
    assert "1 labels for 2 texts" in err.issues[0].message


def test_exactly_one_of_source_or_texts(tmp_path):
    err = spec_error(spec(), tmp_path)
    assert err.issues[0].path == ("dataset",)
    assert "exactly one" in err.issues[0].message
    err = spec_error(spec(source="txt:d.txt", texts=["a"]), tmp_path)
    assert "both" in err.issues[0].message


def test_inline_empty(tmp_path):
    err = spec_error(spec(texts=[]), tmp_path)
    assert err.issues[0].path == ("dataset", "texts")
    assert "empty" in err.issues[0].message


# ------------------------------------------------------------------------------ fingerprint


def test_fingerprint_stable_across_paths(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "one.txt").write_text("hello\nworld\n")
    (tmp_path / "b" / "two.txt").write_text("hello\n\nworld\n")
    fa = load_dataset(spec(source="txt:a/one.txt"), tmp_path).fingerprint
    fb = load_dataset(spec(source="txt:two.txt"), tmp_path / "b").fingerprint
    assert fa == fb
    assert len(fa) == 64 and int(fa, 16) >= 0
    # and stable across runs (no hash randomisation, no time, no path)
    assert fa == load_dataset(spec(source="txt:a/one.txt"), tmp_path).fingerprint


def test_fingerprint_sensitive(tmp_path):
    base = load_dataset(spec(texts=["hello", "world"]), tmp_path).fingerprint
    assert load_dataset(spec(texts=["hello", "worle"]), tmp_path).fingerprint != base
    assert load_dataset(spec(texts=["hello", "world"], labels=["a", "b"]), tmp_path).fingerprint != base
    assert load_dataset(spec(texts=["world", "hello"]), tmp_path).fingerprint != base
    assert load_dataset(spec(texts=["hello", "world"], seed=3), tmp_path).fingerprint != base
    # a pinned value: the canonical encoding must not drift across machines and versions
    # (the store is keyed by it, so a change silently invalidates every cached result)
    assert base == "e0d0a16b9fa4a7370637a3a9d7d64d9d61b51df54f4043178c2dfe8658d93d8a"


# ------------------------------------------------------------------- parquet and Hugging Face datasets

ROWS = [("The cat sat on the mat.", "pets"), ("Tax law is hard.", "law"), ("", "law"),
        ("Dogs bark at night.", "pets"), ("A court ruled today.", "law")]


def test_parquet_reads_like_a_jsonl_file(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": [t for t, _ in ROWS], "topic": [l for _, l in ROWS], "n": list(range(5))}),
                   tmp_path / "data.parquet")
    (tmp_path / "data.jsonl").write_text("".join(json.dumps({"body": t, "topic": l}) + "\n" for t, l in ROWS))
    ds = load_dataset(spec(source="parquet:data.parquet", text="body", label="topic", limit=None), tmp_path)
    same = load_dataset(spec(source="jsonl:data.jsonl", text="body", label="topic", limit=None), tmp_path)
    assert ds.texts == same.texts == tuple(t for t, _ in ROWS if t)  # the empty text dropped
    assert ds.labels == same.labels and ds.sources[0] == "data.parquet:0" and ds.sources[2] == "data.parquet:3"
    issue = spec_error(spec(source="parquet:data.parquet", text="body", label="topc"), tmp_path).issues[0]
    assert issue.path == ("dataset", "label") and issue.message == "no column 'topc'; columns: body, topic, n"
    assert issue.hint == "did you mean 'topic'?"
    (tmp_path / "bad.parquet").write_text("not parquet")
    issue = spec_error(spec(source="parquet:bad.parquet"), tmp_path).issues[0]
    assert issue.path == ("dataset", "source") and "not a readable parquet file" in issue.message


def test_hf_dataset_saved_to_disk(tmp_path):
    datasets = pytest.importorskip("datasets")

    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["law", "pets"])})
    data = {"text": [t for t, _ in ROWS], "label": [["law", "pets"].index(l) for _, l in ROWS]}
    train = datasets.Dataset.from_dict(data, features=features)
    test = datasets.Dataset.from_dict({k: v[:2] for k, v in data.items()}, features=features)
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "dd"))
    train.save_to_disk(str(tmp_path / "one"))

    ds = load_dataset(spec(source="hf:dd", label="label", limit=None), tmp_path)
    assert ds.texts == tuple(t for t, _ in ROWS if t)
    assert ds.labels == tuple(l for t, l in ROWS if t)  # ClassLabel ints read as their names
    assert ds.sources[0] == "hf:dd[train]:0"
    assert load_dataset(spec(source="hf:dd", split="test", limit=None), tmp_path).texts == (ROWS[0][0], ROWS[1][0])
    assert load_dataset(spec(source="hf:one", limit=None), tmp_path).texts == ds.texts
    assert ds.fingerprint == load_dataset(spec(source="hf:one", label="label", limit=None), tmp_path).fingerprint

    issue = spec_error(spec(source="hf:dd", split="tset"), tmp_path).issues[0]
    assert issue.path == ("dataset", "split") and issue.message == "split 'tset' is not in dd; splits: train, test"
    assert issue.hint == "did you mean 'test'?"
    issue = spec_error(spec(source="hf:one", split="train"), tmp_path).issues[0]
    assert issue.path == ("dataset", "split") and "no splits" in issue.message
    issue = spec_error(spec(source="hf:dd", text="txt"), tmp_path).issues[0]
    assert issue.path == ("dataset", "text") and issue.message == "no column 'txt'; columns: text, label"
    issue = spec_error(spec(source="jsonl:x.jsonl", split="train"), tmp_path).issues[0]
    assert issue.path == ("dataset", "split")


def test_hf_dataset_name_not_in_the_cache_is_a_spec_error(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    issue = spec_error(spec(source="hf:nobody/no-such-dataset"), tmp_path).issues[0]
    assert issue.path == ("dataset", "source")
    assert issue.message.startswith("cannot load the Hugging Face dataset 'nobody/no-such-dataset' (split 'train')")
    assert "save_to_disk" in issue.hint


def test_texts_left_out_are_named_never_dropped_silently(tmp_path, capsys):
    from lensframe.cli import main

    long = "x" * (MAX_CHARS + 1)
    (tmp_path / "data.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in ["one", long, "", "two", long]))
    ds = load_dataset(spec(source="jsonl:data.jsonl", limit=None), tmp_path)
    assert ds.texts == ("one", "two")
    assert ds.notes == (f"left out 2 texts longer than {MAX_CHARS:,} characters (data.jsonl:2, data.jsonl:5)",
                        "left out 1 empty text")
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text("lensframe: 1\nmodel: hf:gpt2\ndataset: {source: 'jsonl:data.jsonl'}\nviews:\n  t: {type: text}\n")
    assert main(["validate", str(spec_path)]) == 0
    assert f"{spec_path}: note: left out 2 texts longer than" in capsys.readouterr().err
