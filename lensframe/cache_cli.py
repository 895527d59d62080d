"""`lensframe cache list|gc TARGET...`: what a store holds for each spec, and removing what no spec
references.

A TARGET is a spec file or a folder (its *.yaml specs). Each spec is checked and compiled as `plan`
does (no weights load), which gives the store key of every result its views need. An entry is
referenced by a spec when its key is one of those, or when it is a result computed on demand (a
dream, an edit search) from models the spec uses (the entry's refs name their fingerprints). `gc`
removes the entries of each store that no given spec references, and the leftovers of interrupted
writes. A dataset pass's checkpoint (lensframe.checkpoint) is kept while a given spec still needs
every result it is computing (it resumes that pass) and at least one of them is not stored yet;
gc removes the others (a spec edited since, or a pass finished while its checkpoint was being
written). It refuses to run when a spec does not check, since it would then not know that spec's keys.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from .checkpoint import checkpoints
from .errors import LensframeError

STORED_KINDS = ("prepare", "dataset", "derive")  # focus and lookup results live in memory (or in kept_focus)


def add_parser(sub) -> None:
    c = sub.add_parser("cache", help="list a store's entries per spec, or remove those no spec references (gc)")
    c.add_argument("action", choices=["list", "gc"])
    c.add_argument("target", nargs="+", help="spec files, or folders whose *.yaml are specs")
    c.add_argument("--cache-dir", help="the store (default: .lensframe/cache beside each spec)")
    c.add_argument("--dry-run", action="store_true", help="gc: say what would be removed, remove nothing")
    c.add_argument("--allow-local-views", action="store_true", help="allow view types from local Python files (they run code)")
    c.set_defaults(fn=cache_command)


def _specs(targets) -> list[Path]:
    out = []
    for t in map(Path, targets):
        if t.is_dir():
            found = sorted(t.glob("*.yaml")) + sorted(t.glob("*.yml"))
            if not found:
                raise LensframeError(f"{t}: no *.yaml spec in this folder")
            out += found
        elif t.is_file():
            out.append(t)
        else:
            raise LensframeError(f"{t}: no such file or folder")
    return list(dict.fromkeys(p.resolve() for p in out))


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def _resumable(doc, keys, entries) -> bool:
    """Whether a given spec resumes this checkpoint: it needs every result the pass computes, and
    one of them is not stored yet. A checkpoint without keys (unreadable) is resumed by nobody."""
    ckpt_keys = (doc or {}).get("keys") or []
    return bool(ckpt_keys) and all(k in keys for k in ckpt_keys) and any(k not in entries for k in ckpt_keys)


def _describe(doc) -> str:
    if doc is None:
        return "(unreadable)"
    done, total = doc.get("done", "?"), doc.get("batches") or "?"
    return f"batch {done} of {total} of a pass computing {', '.join(doc.get('nodes') or []) or '?'}"


def cache_command(args) -> int:
    from .board import Board

    boards, errors = [], []
    for path in _specs(args.target):
        try:
            boards.append(Board.from_file(path, cache_dir=args.cache_dir, allow_local_views=args.allow_local_views))
        except LensframeError as err:
            errors.append(str(err))
    if errors:
        raise LensframeError("\n".join(errors) + ("\n    hint: gc needs every spec to check, to know what it references"
                                                   if args.action == "gc" else ""))
    by_store = defaultdict(list)
    for b in boards:
        by_store[b.store.root.resolve()].append(b)
    for root, group in by_store.items():
        store = group[0].store
        entries = {key: (doc, size) for key, doc, size in store.entries()}
        keys = {p.key: (b, p) for b in group for p in b.plan.nodes.values()}
        fingerprints = {fp for b in group for fp in b.fingerprints.values()}

        def referenced(key, doc) -> bool:
            if key in keys:
                return True
            refs = (doc or {}).get("refs") or {}
            return bool(refs.get("models")) and set(refs["models"]) <= fingerprints

        unreferenced = [k for k, (doc, _) in entries.items() if not referenced(k, doc)]
        ckpts = [(path, doc, size, _resumable(doc, keys, entries)) for path, doc, size in checkpoints(store)]
        total = sum(size for _, size in entries.values())
        print(f"store {root}: {len(entries)} entries, {_mb(total)}")
        if args.action == "list":
            for b in group:
                kept = [p for p in b.plan.nodes.values() if p.node.kind in STORED_KINDS]
                stored = [(p, entries[p.key][1]) for p in kept if p.key in entries]
                missing = len(kept) - len(stored)
                print(f"  {b.spec.file}: {len(stored)} of {len(kept)} results stored, "
                      f"{_mb(sum(s for _, s in stored))}" + (f" ({missing} not computed yet)" if missing else ""))
                for p, size in sorted(stored, key=lambda x: -x[1]):
                    print(f"    {p.key[:12]}  {_mb(size):>10}  {p.node.label()}")
            on_demand = [k for k, (doc, _) in entries.items() if k not in keys and referenced(k, doc)]
            if on_demand:
                print(f"  on demand (dreams, edit searches) of these specs' models: {len(on_demand)} entries, "
                      f"{_mb(sum(entries[k][1] for k in on_demand))}")
                for k in on_demand:
                    print(f"    {k[:12]}  {_mb(entries[k][1]):>10}  {(entries[k][0] or {}).get('node', '?')}")
            print(f"  referenced by none of these specs: {len(unreferenced)} entries, "
                  f"{_mb(sum(entries[k][1] for k in unreferenced))}" + (" (lensframe cache gc removes them)"
                                                                        if unreferenced else ""))
            for path, doc, size, resumable in ckpts:
                print(f"  checkpoint {path.name[:17]}  {_mb(size):>10}  {_describe(doc)}: "
                      + ("resumed by the next compute or serve" if resumable
                         else "no spec given resumes it (lensframe cache gc removes it)"))
            continue
        leftovers = store.leftovers()
        freed = sum(entries[k][1] for k in unreferenced) + sum(p.stat().st_size for p in leftovers)
        verb = "would remove" if args.dry_run else "removed"
        for k in unreferenced:
            print(f"  {verb} {k[:12]}  {_mb(entries[k][1]):>10}  {(entries[k][0] or {}).get('node', '(unreadable)')}")
            if not args.dry_run:
                store.remove(k)
        for p in leftovers:
            print(f"  {verb} {p.relative_to(root)} (left by an interrupted write)")
            if not args.dry_run:
                p.unlink(missing_ok=True)
        stale = [(path, doc, size) for path, doc, size, resumable in ckpts if not resumable]
        for path, doc, size in stale:
            print(f"  {verb} checkpoint {path.name[:17]}  {_mb(size):>10}  {_describe(doc)}")
            if not args.dry_run:
                path.unlink(missing_ok=True)
        freed += sum(size for _, _, size in stale)
        print(f"  {verb} {len(unreferenced)} entries, {len(leftovers)} leftover file(s) and {len(stale)} "
              f"checkpoint(s), {_mb(freed)}; "
              f"kept {len(entries) - len(unreferenced)} entries")
    return 0
