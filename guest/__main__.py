"""CLI: `python3 -m guest {serve,check,probe,edge}`.

serve: run the FUSE server in the foreground (exit 0, or 3 on setup failure).
check: start a server, run client checks, print KTAP (exit 0 pass, 1 fail, 4 skip).
probe: print JSON describing what the running kernel offers.
runner: stay resident and run the above for the host without a new interpreter each time.
edge: run one edge-case scenario (KTAP; see guest/edge/__init__.py).
"""

from __future__ import annotations

import argparse
import sys

from guest import serve_cli


def _at_least(least: int, option: str, why: str = ""):  # noqa: ANN202 - an argparse type
    """An argparse type: a whole number >= least, else "OPTION wants a whole number >= least"."""
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            n = least - 1
        if n < least:
            raise argparse.ArgumentTypeError(f"{option} wants a whole number >= {least}{why}, not {text!r}")
        return n
    return parse


#: --scale's value: a whole number >= 1
_scale = _at_least(1, "--scale")
#: --fsx-ops' value: fsx's path proof wants each of its six kinds of operation run once
_fsx_ops = _at_least(6, "--fsx-ops", " (one of each of fsx's six kinds of operation)")


def parser() -> argparse.ArgumentParser:
    """The argument parser (also documents the CLI)."""
    ap = argparse.ArgumentParser(prog=serve_cli.PROG, description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    serve_cli.add_parser(sub)
    c = sub.add_parser("check", help="serve a fresh mount and run client checks (KTAP)")
    serve_cli.server_opts(c)
    c.add_argument("--only", nargs="+", metavar="NAME", help="run only these cases")
    c.add_argument("--seed", type=int, default=None, help="seed for the fsx case")
    c.add_argument("--fsx-ops", type=_fsx_ops, default=None,
                   help="fsx's operation count (default 200 times --scale)")
    c.add_argument("--scale", type=_scale, default=1, metavar="N",
                   help="multiply the bulk of the data cases' workloads by N (default 1: the sizes "
                        "their paths need, each explained in guest/checks/*_cases.py)")
    c.add_argument("--case-timeout", type=float, default=120.0)
    c.add_argument("--stop-at-first-failure", action="store_true",
                   help="after the first failing case every later line is SKIP 'stopped at first failure' "
                        "(the host's pytest -x: the verdict is given, the rest would only cost time)")
    c.add_argument("--known-failing", nargs="+", default=[], metavar="PATTERN",
                   help="fnmatch patterns of case names a known issue makes fail: their failure does not "
                        "stop the run (e.g. '*.fsx')")
    c.add_argument("--keep", action="store_true", help="keep the work dir under /tmp")
    c.add_argument("--list", action="store_true", help="list case names and exit")
    sub.add_parser("probe", help="print what the running kernel offers (JSON)")
    r = sub.add_parser("runner", help="resident: run `python3 -m guest` commands sent over TCP")
    r.add_argument("--port", type=int, required=True, help="loopback TCP port to listen on")
    from guest.edge import add_parser as add_edge_parser
    add_edge_parser(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Dispatch to the subcommand; returns the exit code."""
    args = parser().parse_args(argv)
    if args.cmd == "serve":
        return serve_cli.main(args)
    if args.cmd == "edge":
        from guest.edge import main as edge_main
        return edge_main(args)
    if args.cmd == "runner":
        from guest.resident import serve as runner_serve
        return runner_serve(args.port, main)
    if args.cmd == "probe":
        from guest.probe import main as probe_main
        return probe_main()
    from guest.checks.runner import main as check_main
    return check_main(args)


if __name__ == "__main__":
    sys.exit(main())
