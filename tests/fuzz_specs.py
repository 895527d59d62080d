"""A seeded generator of broken specs and data files, for the fuzz test (tests/test_fuzz.py) and its
larger run (benchmarks/bench_fuzz.py): mutations of every example spec (wrong types, huge and
negative values, deleted, unknown and misspelt keys, bad encodings, anchors and aliases, tags, giant
lines, cut files, tabs) and data files a spec reads (bad JSON, binary junk, wrong columns, empty).

Each case is (name, spec bytes, {data file name: bytes}); the runner writes them to a folder and runs
`lensframe validate` and `plan` on the spec: every case must end with exit 0 or 2, never a traceback.
"""
from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.yaml"))

VALUES = [None, True, False, 0, -1, 1, 2**31, 10**18, -10**18, 1e308, -0.0, float("inf"), float("nan"), "",
          "x" * 5000, "💥", "../../etc/passwd", "path:/nonexistent", "builtin:nope", "jsonl:missing.jsonl",
          [], [1, "a", None], {}, {"type": "text"}, {"a": {"b": {"c": [1, 2]}}}, "${HOME}", "{}", "[", "%", "*x"]


def _paths(data, prefix=()):
    """Every (path, value) in a nested structure of dicts and lists."""
    yield prefix, data
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _paths(v, prefix + (i,))


def _parent(data, path):
    for p in path[:-1]:
        data = data[p]
    return data


def mutate_data(data, rng: random.Random):
    data = copy.deepcopy(data)
    paths = [p for p, _ in _paths(data) if p]
    for _ in range(rng.randint(1, 3)):
        if not paths:
            break
        path = rng.choice(paths)
        try:
            parent = _parent(data, path)
        except (KeyError, IndexError, TypeError):
            continue
        op = rng.choice(["replace", "replace", "delete", "unknown", "typo", "nest"])
        key = path[-1]
        try:
            if op == "replace":
                parent[key] = rng.choice(VALUES)
            elif op == "delete":
                del parent[key]
            elif op == "unknown" and isinstance(parent, dict):
                parent[f"unknown_{rng.randint(0, 99)}"] = rng.choice(VALUES)
            elif op == "typo" and isinstance(parent, dict) and isinstance(key, str) and len(key) > 2:
                i = rng.randrange(len(key) - 1)
                parent[key[:i] + key[i + 1] + key[i] + key[i + 2:]] = parent.pop(key)
            elif op == "nest":
                parent[key] = [parent[key], {"deeper": parent[key]}]
        except (KeyError, IndexError, TypeError):
            continue
    return data


def _dump(data) -> str:
    try:
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    except yaml.YAMLError:
        return json.dumps(data, default=str)


TEXT_MUTATIONS = [
    lambda t, r: t.replace("  ", "\t", 1),  # a tab for indentation
    lambda t, r: t[: r.randrange(len(t))],  # cut short
    lambda t, r: t + "\nextra: &a [1, 2]\nmore: *a\n",
    lambda t, r: "a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b, *b, *b]\n" + t,
    lambda t, r: t + "\nboom: !!python/object/apply:os.system ['echo pwned']\n",
    lambda t, r: t + "\ntitle: " + "y" * r.choice([10_000, 200_000]) + "\n",
    lambda t, r: t + "\n" + "z: 1\n" * 3,  # a duplicate key
    lambda t, r: t.replace(":", "", 1),
    lambda t, r: t.replace("\n", "\n ", 1),
    lambda t, r: "\ufeff" + t,
    lambda t, r: t + "\n*undefined_alias\n",
    lambda t, r: "---\n" + t + "\n---\nsecond: doc\n",
]


def _bad_bytes(text: str, r: random.Random) -> bytes:
    raw = bytearray(text.encode())
    for _ in range(r.randint(1, 4)):
        raw.insert(r.randrange(len(raw) + 1), r.choice([0xFF, 0xFE, 0xC3, 0x00, 0x80]))
    return bytes(raw)


DATA_FILES = {
    "good.jsonl": b'{"text": "one", "topic": "a"}\n{"text": "two", "topic": "b"}\n',
    "badjson.jsonl": b'{"text": "one"\n[1, 2]\n"str"\n',
    "binary.jsonl": bytes(range(256)) * 4,
    "cols.csv": b"body,label\nhello,a\n",
    "empty.csv": b"",
    "latin1.txt": "caf\xe9\n".encode("latin-1"),
    "junk.parquet": b"PAR1 not really",
}


def data_case(r: random.Random) -> tuple[bytes, dict]:
    name = r.choice(list(DATA_FILES))
    scheme = {"jsonl": "jsonl", "csv": "csv", "txt": "txt", "parquet": "parquet"}[name.rsplit(".", 1)[1]]
    ds = {"source": f"{scheme}:{name}", "limit": r.choice([1, 5, None]), "max_tokens": r.choice([2, 16, 4096])}
    if r.random() < 0.5:
        ds["label"] = r.choice(["topic", "label", "nope"])
    if r.random() < 0.3:
        ds["text"] = r.choice(["text", "body", "missing"])
    spec = {"lensframe": 1, "model": "builtin:smollm2-135m", "dataset": ds,
            "views": {"t": {"type": "text"}, "lens": {"type": "logit_lens", "top_k": r.choice([1, 3, 0])}}}
    return _dump(spec).encode(), {name: DATA_FILES[name]}


def cases(n: int, seed: int = 0):
    """n cases, the same ones for the same seed."""
    r = random.Random(seed)
    sources = [(p.name, p.read_text()) for p in SPECS]
    for i in range(n):
        kind = r.random()
        name, text = r.choice(sources)
        if kind < 0.45:
            yield f"{i}-data-{name}", _dump(mutate_data(yaml.safe_load(text), r)).encode(), {}
        elif kind < 0.8:
            yield f"{i}-text-{name}", r.choice(TEXT_MUTATIONS)(text, r).encode("utf-8", errors="replace"), {}
        elif kind < 0.88:
            yield f"{i}-bytes-{name}", _bad_bytes(text, r), {}
        else:
            spec, files = data_case(r)
            yield f"{i}-datafile", spec, files


def write_case(folder: Path, spec: bytes, files: dict) -> Path:
    """The case in `folder`: spec.yaml and its data files (the example specs' relative paths, such
    as specs/audit.yaml's model folder, resolve from the specs folder: the case is written there)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, blob in files.items():
        (folder / name).write_bytes(blob)
    path = folder / "spec.yaml"
    path.write_bytes(spec)
    return path
