"""The `lensframe` command. User mistakes print like a compiler (file:line:col) and exit 2."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import LensframeError


def _board(args, **extra):
    from .board import Board
    from .spec.validate import load_spec

    spec = load_spec(args.spec, allow_local_views=getattr(args, "allow_local_views", False))
    board = Board(spec, cache_dir=getattr(args, "cache_dir", None), device=getattr(args, "device", "cpu") or "cpu",
                  trust_remote_code=getattr(args, "trust_remote_code", False), **extra)
    _say_notes(args.spec, board.dataset)
    return board


def _say_notes(spec_path, dataset) -> None:
    """What reading the dataset left out (lensframe.data), on stderr beside the spec's name."""
    for note in dataset.notes if dataset is not None else ():
        print(f"{spec_path}: note: {note}", file=sys.stderr)


def cmd_validate(args) -> int:
    """Every check that needs no weights (lensframe.checks), the same as plan and serve make before
    they load a model, so a spec that validates also loads; --schema-only: the spec file alone."""
    import yaml

    from .spec.validate import load_spec

    errors = []
    for path in args.spec:
        try:
            spec = load_spec(path, allow_local_views=args.allow_local_views)
            not_local = []
            if not args.schema_only:
                from .checks import check_spec

                checked = check_spec(spec, trust_remote_code=args.trust_remote_code, offline=True)
                not_local = checked.not_local
                _say_notes(path, checked.dataset)
            if args.normalized:
                print(yaml.safe_dump(spec.normalized(), sort_keys=False), end="")
            elif not args.quiet:
                print(f"{path}: ok ({len(spec.views)} views{', schema only' if args.schema_only else ''})")
            for name in not_local:
                print(f"{path}: note: model {name!r} ({spec.models[name].source}) is not in the local Hugging Face "
                      "cache, so the checks that need its config were skipped (serve downloads it where the hub "
                      "is reachable)", file=sys.stderr)
        except LensframeError as err:
            errors.append(str(err))
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 2
    return 0


def cmd_plan(args) -> int:
    from .estimate import check_fits, estimate_plan, parse_size

    limit = parse_size(args.max_memory) if args.max_memory else None
    board = _board(args)
    estimates = estimate_plan(board, calibrate=args.calibrate)
    if limit is not None:
        check_fits(board, estimates, limit)
    if args.json:
        doc = board.plan.to_json()
        for ps, est in zip(doc["passes"], estimates):
            ps["estimate"] = est.to_json()
        print(json.dumps(doc, indent=2))
    else:
        print(board.plan.describe())
        print("estimates (memory from shapes; time from --calibrate):")
        print("\n".join(e.describe() for e in estimates))
    return 0


def cmd_compute(args) -> int:
    if args.workers is not None and args.workers < 1:
        raise LensframeError(f"--workers {args.workers}: give at least 1 worker")
    board = _board(args)
    _check_lock(board, args.frozen)
    if args.max_memory:  # refuse before any weight loads
        from .estimate import check_fits, estimate_plan, parse_size

        check_fits(board, estimate_plan(board), parse_size(args.max_memory))
    if args.workers or args.scheduler:  # shards of the dataset on Dask workers, merged into this store
        from .distributed import compute_distributed

        report = compute_distributed(board, args.workers, args.scheduler, progress=not args.json)
    else:
        report = board.compute(progress=not args.json)
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        r = report
        print(f"{r.forward_passes} forward passes in {r.batches} batches, {r.cache_hits} cached, "
              f"{r.computed} computed, {r.seconds:.1f}s")
    return 0


def cmd_serve(args) -> int:
    opened = None
    if args.open is not None:  # checked before any weight is loaded
        from .focus_url import URL_FIELDS, query_string

        pairs, unknown = query_string(args.open)
        if unknown:
            raise LensframeError(f"--open {args.open!r}: unknown focus field(s) {', '.join(map(repr, unknown))}\n"
                                 f"    hint: fields: {', '.join(URL_FIELDS)} (e.g. --open \"text=The Eiffel Tower is in&layer=5\")")
        opened = pairs
    board = _board(args)
    _check_lock(board, args.frozen)
    if args.num_threads:
        from .executor import set_threads

        set_threads(args.num_threads)
    if opened:
        from .focus_url import parse_query

        _fields, problems = parse_query(opened, board)
        if problems:
            raise LensframeError(f"--open {args.open!r}: " + "; ".join(problems))
    from lensframe.server.app import serve

    serve(board, port=args.port, address=args.address, show=args.show, read_only_store=args.read_only_store,
          websocket_origins=args.allow_websocket_origin, open_query=opened, watch=args.watch,
          allow_local_views=args.allow_local_views, allow_hosts=args.allow_host,
          basic_auth=args.basic_auth or os.environ.get("LENSFRAME_BASIC_AUTH"), oauth_provider=args.oauth_provider,
          focus_queue=args.focus_queue, focus_process=args.focus_process, timings_log=args.timings_log)
    return 0


def cmd_export(args) -> int:
    """The dashboard as one HTML file that opens offline (server/export.py): planned first, refused
    over --max-mb with the options that fit, then the missing results computed and the page written."""
    from .export_plan import check_fits, export_options, plan_export

    if args.max_mb is not None and args.max_mb <= 0:
        raise LensframeError(f"--max-mb {args.max_mb}: give a size in MB above 0")
    board = _board(args)
    options = export_options(board, args.samples, args.layers, args.focus, args.neurons)
    limit = int(args.max_mb * 10**6) if args.max_mb is not None else None
    if limit is not None:  # before any forward: the plan needs the token counts only
        check_fits(board, plan_export(board, options), options, limit, args.spec)
    board.compute(progress=not args.quiet)
    from lensframe.server.export import export

    report = export(board, args.output, options, max_bytes=limit)
    for vid, why in report.plan.notes.items():
        print(f"{args.spec}: note: view {vid!r} is a note in the page: it {why}", file=sys.stderr)
    print(report.describe())
    return 0


def cmd_lock(args) -> int:
    from .lock import write_lock

    path = write_lock(_board(args))
    print(f"wrote {path}")
    return 0


def cmd_diff(args) -> int:
    from .board import Board
    from .diff import format_diff, spec_diff
    from .lock import LOCK_SUFFIX, check, lock_path

    local = args.allow_local_views
    if args.b.endswith(LOCK_SUFFIX):  # a spec against its lock: what drifted since
        board = Board.from_file(args.a, allow_local_views=local)
        if lock_path(board.spec.file).resolve() != Path(args.b).resolve():
            raise LensframeError(f"{args.b} is not the lock of {args.a} (that is {lock_path(args.a)})")
        lines = check(board)
        print("\n".join(lines) if lines else f"{args.a} resolves to what {args.b} pins")
        return 0
    a, b = Board.from_file(args.a, allow_local_views=local), Board.from_file(args.b, allow_local_views=local)
    print(format_diff(spec_diff(a, b), args.a, args.b))
    return 0


def _check_lock(board, frozen: bool) -> None:
    """Say what drifted from the spec's lock file (an error with --frozen)."""
    from .lock import check

    for line in check(board, frozen):
        print(f"drift from the lock: {line}", file=sys.stderr)


def cmd_dream(args) -> int:
    from .dream_cli import dream_command

    return dream_command(args)


def cmd_views(args) -> int:
    from .registry import view_types
    from .spec.reference import default_text, type_name

    for name, cls in view_types().items():
        print(f"{name}: {cls.description}")
        print(f"    reads focus: {', '.join(cls.reads) or '-'}; a click sets: {', '.join(cls.sets) or '-'}")
        print("    lensframe export: " + ("linked in the page (a JS port)" if cls.export_script else
                                         f"a note in the page: it {cls.export_note or 'has no JS port yet'}"))
        for pname, f in cls.Params.model_fields.items():
            kind = type_name(f.annotation).replace("\\|", "|")
            print(f"    {pname}: {kind} = {default_text(f).strip('`') or 'None'}  {f.description or ''}".rstrip())
    return 0


def cmd_schema(args) -> int:
    if args.markdown:
        from .spec.reference import markdown

        print(markdown())
        return 0
    from .spec.jsonschema import spec_json_schema

    print(json.dumps(spec_json_schema(builtin_only=args.builtin_only), indent=2))
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lensframe")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed)"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lensframe", description="Linked interpretability dashboards from a YAML spec.")
    p.add_argument("--version", action="version", version=f"lensframe {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    def with_board(sp):
        sp.add_argument("spec", help="the spec file (YAML)")
        sp.add_argument("--cache-dir", help="result store (default: .lensframe/cache beside the spec)")
        sp.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
        sp.add_argument("--trust-remote-code", action="store_true", help="allow model code from the hub, if the spec asks too")
        sp.add_argument("--allow-local-views", action="store_true",
                        help="allow view types from Python files beside the spec (type: ./my_views.py:MyView): they run code")
        return sp

    s = with_board(sub.add_parser("serve", help="serve the dashboard"))
    s.add_argument("--port", type=int, default=5006)
    s.add_argument("--address", default="127.0.0.1", help="bind address (default: 127.0.0.1 only)")
    s.add_argument("--show", action="store_true", help="open a browser")
    s.add_argument("--frozen", action="store_true", help="refuse to serve when the spec drifted from its lock file")
    s.add_argument("--open", metavar="QUERY", default=None,
                   help='open the page focused on QUERY, e.g. "text=The Eiffel Tower is in&layer=5" '
                        "(fields: text, sample, position, layer, head, neuron, model)")
    s.add_argument("--read-only-store", action="store_true",
                   help="serve only what the store holds (fill it with `lensframe compute` first); compute and "
                        "write nothing, so several servers can share one store (docs/SERVING.md)")
    s.add_argument("--watch", action="store_true",
                   help="rebuild the dashboard when the spec file is saved: an edit that does not check is shown "
                        "in a banner above the last valid version; open pages keep their focus (docs/SERVING.md)")
    s.add_argument("--basic-auth", metavar="PASSWORD|FILE",
                   help="require a login (Panel's basic auth): one password for any user name, or a JSON file of "
                        "{user: password}; or set LENSFRAME_BASIC_AUTH, which `ps` does not show (docs/SERVING.md)")
    s.add_argument("--oauth-provider", metavar="NAME",
                   help="require a login with an OAuth provider Panel supports (github, google, azure, okta, "
                        "generic, ...); its key and secret from PANEL_OAUTH_KEY and PANEL_OAUTH_SECRET")
    s.add_argument("--allow-host", action="append", default=[], metavar="HOST[:PORT]",
                   help="a host name requests may use besides the bound address and localhost (a name the "
                        "machine is reached by; requests for any other host get 403, against DNS rebinding); repeatable")
    s.add_argument("--allow-websocket-origin", action="append", default=[], metavar="HOST[:PORT]",
                   help="a host the pages are served under besides this address (e.g. a proxy's); repeatable")
    s.add_argument("--focus-queue", type=int, default=16, metavar="N",
                   help="focus forwards run on a worker thread per model, beside the event loop that serves "
                        "every session's clicks; at most N wait per model, past that a view says the server is busy "
                        "(default: %(default)s; 0: forwards on the event loop, where one freezes every session)")
    s.add_argument("--focus-process", action="store_true",
                   help="run each model's focus forwards in a process of its own, not a thread of this one: "
                        "a forward then keeps its speed while the event loop renders other sessions' clicks, "
                        "at the cost of a second copy of each model's weights in memory (docs/SERVING.md)")
    s.add_argument("--num-threads", type=int, default=None, metavar="N",
                   help="torch threads per forward in this server (default: the spec's run.threads, else "
                        "OMP_NUM_THREADS, else 2); at most the cores this process has (docs/SERVING.md)")
    s.add_argument("--timings-log", metavar="FILE",
                   help="append each focus change's server-side time to FILE, one JSON line per change "
                        "(docs/SERVING.md)")
    s.set_defaults(fn=cmd_serve)
    v = sub.add_parser("validate", help="check specs; print every error")
    v.add_argument("spec", nargs="+")
    v.add_argument("--normalized", action="store_true", help="print the normalized spec")
    v.add_argument("--quiet", "-q", action="store_true")
    v.add_argument("--allow-local-views", action="store_true", help="allow view types from local Python files (they run code)")
    v.add_argument("--schema-only", action="store_true",
                   help="check the spec file alone (keys, types, ranges, layout), not its files, models and data")
    v.add_argument("--trust-remote-code", action="store_true", help="as for serve: the spec's trust_remote_code is allowed")
    v.set_defaults(fn=cmd_validate)
    pl = with_board(sub.add_parser("plan", help="print the compiled plan: nodes, sharing, passes, memory, cache"))
    pl.add_argument("--json", action="store_true")
    pl.add_argument("--calibrate", action="store_true",
                    help="load the model(s) and time each pass's longest batch, to estimate time (and measure memory)")
    pl.add_argument("--max-memory", metavar="SIZE",
                    help="refuse (exit 2) a plan whose pass would need more memory than SIZE (500MB, 2GB, 1.5GiB, bytes)")
    pl.set_defaults(fn=cmd_plan)
    c = with_board(sub.add_parser("compute", help="run the dataset passes now (with a progress bar)"))
    c.add_argument("--json", action="store_true", help="print forward_passes, batches, cache_hits, seconds")
    c.add_argument("--frozen", action="store_true", help="refuse to run when the spec drifted from its lock file")
    c.add_argument("--max-memory", metavar="SIZE", help="refuse (exit 2) when a pass would need more memory than SIZE")
    where = c.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, help="shard the dataset over N local Dask worker processes")
    where.add_argument("--scheduler", help="shard the dataset over a Dask cluster (tcp://host:8786)")
    c.set_defaults(fn=cmd_compute)
    ex = with_board(sub.add_parser("export", help="write the dashboard as one HTML file that opens offline, its views "
                                                  "linked in the page (no server)"))
    ex.add_argument("-o", "--output", required=True, metavar="FILE", help="the HTML file to write")
    ex.add_argument("--samples", metavar="RANGES",
                    help="the samples the page holds, e.g. 0-49 or 3,7,10-12 (default: every sample)")
    ex.add_argument("--layers", metavar="RANGES",
                    help="the layers whose attention patterns the page holds, e.g. 0-11 (default: every layer)")
    ex.add_argument("--neurons", metavar="RANGES",
                    help="the neurons whose top examples the page holds, e.g. 0-99,512 (default: every neuron of "
                         "the exported layers)")
    ex.add_argument("--focus", metavar="QUERY",
                    help='the focus the page opens at, as the served page\'s address writes it, e.g. '
                         '"sample=3&position=5&layer=12&head=2&neuron=100" (default: the first sample\'s last token)')
    ex.add_argument("--max-mb", type=float, metavar="MB",
                    help="refuse (exit 2) a page over MB megabytes, naming the --samples, --layers or --neurons "
                         "that fit")
    ex.add_argument("--quiet", "-q", action="store_true", help="no progress bar while missing results are computed")
    ex.set_defaults(fn=cmd_export)
    lk = with_board(sub.add_parser("lock", help="write SPEC's lock file beside it (models, data, versions it resolves to)"))
    lk.set_defaults(fn=cmd_lock)
    df = sub.add_parser("diff", help="what two specs differ in, and which results would be computed again")
    df.add_argument("a", help="a spec")
    df.add_argument("b", help="another spec, or A's lock file (then: what drifted since the lock)")
    df.add_argument("--allow-local-views", action="store_true", help="allow view types from local Python files (they run code)")
    df.set_defaults(fn=cmd_diff)
    d = with_board(sub.add_parser("dream", help="optimise an input to excite a neuron (text deep dream), with progress"))
    from .dream_cli import add_arguments

    add_arguments(d)
    d.set_defaults(fn=cmd_dream)
    from .audit_cli import add_parsers

    add_parsers(sub)
    from .cache_cli import add_parser as add_cache_parser

    add_cache_parser(sub)
    sub.add_parser("views", help="list view types and their params").set_defaults(fn=cmd_views)
    sc = sub.add_parser("schema", help="print the spec's JSON Schema (for editors)")
    sc.add_argument("--markdown", action="store_true", help="print the spec reference as markdown instead")
    sc.add_argument("--builtin-only", action="store_true",
                    help="the built-in views only, leaving out installed plugins (schemas/lensframe.schema.json)")
    sc.set_defaults(fn=cmd_schema)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except LensframeError as err:
        print(str(err), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
