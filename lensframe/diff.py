"""`lensframe diff A B`: what two specs differ in (views, models, data, run settings) and which of
B's results A's store would not have (they would be computed again). B may be A's lock file: then
the diff is what drifted since the lock."""
from __future__ import annotations


def _flat(value, prefix="") -> dict:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def _changes(a: dict, b: dict) -> list[str]:
    fa, fb = _flat(a), _flat(b)
    out = []
    for key in sorted(set(fa) | set(fb)):
        if key not in fa:
            out.append(f"{key}: + {fb[key]!r}")
        elif key not in fb:
            out.append(f"{key}: - {fa[key]!r}")
        elif fa[key] != fb[key]:
            out.append(f"{key}: {fa[key]!r} -> {fb[key]!r}")
    return out


def spec_diff(a, b) -> dict:
    """The differences between boards a and b, as sections of lines, and B's recomputed results."""
    na, nb = a.spec.normalized(), b.spec.normalized()
    views = []
    for vid in sorted(set(na["views"]) | set(nb["views"])):
        va, vb = na["views"].get(vid), nb["views"].get(vid)
        if va is None:
            views.append(f"+ {vid} ({vb['type']})")
        elif vb is None:
            views.append(f"- {vid} ({va['type']})")
        else:
            views += [f"{vid}.{line}" for line in _changes(va, vb)]
    models = _changes(na["models"], nb["models"])
    for name in sorted(set(a.sources) & set(b.sources)):
        if a.spec.models[name].source == b.spec.models[name].source and \
                a.sources[name].fingerprint() != b.sources[name].fingerprint():
            models.append(f"{name}: the same source, different weights")
    data = _changes(na["dataset"], nb["dataset"])
    if not data and a.dataset.fingerprint != b.dataset.fingerprint:
        data.append("the same settings, different content (the files changed)")
    keys_a = {p.key for p in a.plan.nodes.values()}
    stored = [p for p in b.plan.nodes.values() if p.node.kind not in ("focus", "lookup")]
    recomputed = [p.node.label() for p in stored if p.key not in keys_a]
    return {"views": views, "models": models, "dataset": data,
            "run": _changes(na["run"], nb["run"]) + _changes({"layout": na["layout"]}, {"layout": nb["layout"]}),
            "recomputed": recomputed, "reused": len(stored) - len(recomputed)}


def format_diff(d: dict, a_name: str, b_name: str) -> str:
    lines = [f"--- {a_name}", f"+++ {b_name}"]
    for section in ("models", "dataset", "views", "run"):
        if d[section]:
            lines.append(f"{section}:")
            lines += [f"  {line}" for line in d[section]]
    if not any(d[s] for s in ("models", "dataset", "views", "run")):
        lines.append("the specs are the same")
    if d["recomputed"]:
        lines.append(f"results {b_name} computes that {a_name}'s plan does not have ({len(d['recomputed'])}; "
                     f"{d['reused']} shared):")
        lines += [f"  {label}" for label in d["recomputed"]]
    else:
        lines.append(f"every stored result of {b_name} is one of {a_name}'s ({d['reused']})")
    return "\n".join(lines)
