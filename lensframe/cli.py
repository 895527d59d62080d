"""The `lensframe` command. User mistakes print like a compiler (file:line:col) and exit 2."""
from __future__ import annotations

import argparse
import json
import sys

from .errors import LensframeError


def _board(args, **extra):
    from .board import Board

    return Board.from_file(args.spec, cache_dir=getattr(args, "cache_dir", None),
                           device=getattr(args, "device", "cpu") or "cpu",
                           trust_remote_code=getattr(args, "trust_remote_code", False), **extra)


def cmd_validate(args) -> int:
    import yaml

    from .spec.validate import load_spec

    errors = []
    for path in args.spec:
        try:
            spec = load_spec(path)
            if args.normalized:
                print(yaml.safe_dump(spec.normalized(), sort_keys=False), end="")
            elif not args.quiet:
                print(f"{path}: ok ({len(spec.views)} views)")
        except LensframeError as err:
            errors.append(str(err))
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 2
    return 0


def cmd_plan(args) -> int:
    board = _board(args)
    print(json.dumps(board.plan.to_json(), indent=2) if args.json else board.plan.describe())
    return 0


def cmd_compute(args) -> int:
    board = _board(args)
    report = board.compute(progress=not args.json)
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        r = report
        print(f"{r.forward_passes} forward passes in {r.batches} batches, {r.cache_hits} cached, "
              f"{r.computed} computed, {r.seconds:.1f}s")
    return 0


def cmd_serve(args) -> int:
    board = _board(args)
    from lensframe.server.app import serve

    serve(board, port=args.port, address=args.address, show=args.show)
    return 0


def cmd_dream(args) -> int:
    from .dream_cli import dream_command

    return dream_command(args)


def cmd_views(args) -> int:
    from .registry import view_types
    from .spec.reference import default_text, type_name

    for name, cls in view_types().items():
        print(f"{name}: {cls.description}")
        print(f"    reads focus: {', '.join(cls.reads) or '-'}; a click sets: {', '.join(cls.sets) or '-'}")
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

    print(json.dumps(spec_json_schema(), indent=2))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lensframe", description="Linked interpretability dashboards from a YAML spec.")
    sub = p.add_subparsers(dest="command", required=True)

    def with_board(sp):
        sp.add_argument("spec", help="the spec file (YAML)")
        sp.add_argument("--cache-dir", help="result store (default: .lensframe/cache beside the spec)")
        sp.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
        sp.add_argument("--trust-remote-code", action="store_true", help="allow model code from the hub, if the spec asks too")
        return sp

    s = with_board(sub.add_parser("serve", help="serve the dashboard"))
    s.add_argument("--port", type=int, default=5006)
    s.add_argument("--address", default="127.0.0.1", help="bind address (default: 127.0.0.1 only)")
    s.add_argument("--show", action="store_true", help="open a browser")
    s.set_defaults(fn=cmd_serve)
    v = sub.add_parser("validate", help="check specs; print every error")
    v.add_argument("spec", nargs="+")
    v.add_argument("--normalized", action="store_true", help="print the normalized spec")
    v.add_argument("--quiet", "-q", action="store_true")
    v.set_defaults(fn=cmd_validate)
    pl = with_board(sub.add_parser("plan", help="print the compiled plan: nodes, sharing, passes, memory, cache"))
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(fn=cmd_plan)
    c = with_board(sub.add_parser("compute", help="run the dataset passes now (with a progress bar)"))
    c.add_argument("--json", action="store_true", help="print forward_passes, batches, cache_hits, seconds")
    c.set_defaults(fn=cmd_compute)
    d = with_board(sub.add_parser("dream", help="optimise an input to excite a neuron (text deep dream), with progress"))
    from .dream_cli import add_arguments

    add_arguments(d)
    d.set_defaults(fn=cmd_dream)
    from .audit_cli import add_parsers

    add_parsers(sub)
    sub.add_parser("views", help="list view types and their params").set_defaults(fn=cmd_views)
    sc = sub.add_parser("schema", help="print the spec's JSON Schema (for editors)")
    sc.add_argument("--markdown", action="store_true", help="print the spec reference as markdown instead")
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
