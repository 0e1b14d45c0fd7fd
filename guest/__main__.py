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

from guest import TRANSPORTS, ZERO_COPY


def _server_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--transport", required=True, choices=TRANSPORTS)
    p.add_argument("--backend", choices=("memory", "passthrough"), default=None,
                   help="default: memory (passthrough for the zero-copy transports)")
    p.add_argument("--backing", help="backing directory for --backend passthrough")
    p.add_argument("--queue-depth", type=int, default=4, help="entries per queue")
    p.add_argument("--pool-bufs", type=int, default=4,
                   help="pool (or kmbuf ring) buffers per queue")
    p.add_argument("--buf-size", type=int, default=0,
                   help="kmbuf buffer bytes (default: max_payload_sz rounded up to a page)")
    p.add_argument("--max-write", type=int, default=131072)
    p.add_argument("--max-pages", type=int, default=None,
                   help="negotiate FUSE_MAX_PAGES with this value")
    p.add_argument("--delay-ms", type=float, default=0.0,
                   help="delay before every reply (to starve pools)")
    p.add_argument("--direct-io", action="store_true", help="FOPEN_DIRECT_IO on opens")


def parser() -> argparse.ArgumentParser:
    """The argument parser (also documents the CLI)."""
    ap = argparse.ArgumentParser(prog="python3 -m guest", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the server in the foreground")
    s.add_argument("--mount", required=True)
    _server_opts(s)
    s.add_argument("--ready-file", help="JSON written once the transport is serving")
    s.add_argument("--counters", help="counters JSON written at exit and on SIGUSR1")
    s.add_argument("--fallback", action="store_true",
                   help="on setup failure keep serving over /dev/fuse (else exit 3)")
    s.add_argument("--drop-uid", type=int, default=None,
                   help="setuid to this uid after mounting (unprivileged server)")
    c = sub.add_parser("check", help="serve a fresh mount and run client checks (KTAP)")
    _server_opts(c)
    c.add_argument("--only", nargs="+", metavar="NAME", help="run only these cases")
    c.add_argument("--seed", type=int, default=None, help="seed for the fsx case")
    c.add_argument("--fsx-ops", type=int, default=300)
    c.add_argument("--case-timeout", type=float, default=120.0)
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
        from guest.daemon import ServeArgs, serve
        backend = args.backend or ("passthrough" if args.transport in ZERO_COPY
                                   else "memory")
        try:
            return serve(ServeArgs(
                mount=args.mount, transport=args.transport, backend=backend,
                backing=args.backing, queue_depth=args.queue_depth, pool_bufs=args.pool_bufs,
                buf_size=args.buf_size, max_write=args.max_write, max_pages=args.max_pages, delay_ms=args.delay_ms,
                ready_file=args.ready_file, counters=args.counters, fallback=args.fallback,
                drop_uid=args.drop_uid, direct_io=args.direct_io))
        except ValueError as exc:  # bad combination of options
            print(f"E: serve: {exc}", file=sys.stderr)
            return 4
        except OSError as exc:  # /dev/fuse, mount(2), ... before serving began
            print(f"E: serve: {exc}", file=sys.stderr)
            return 3
    if args.cmd == "edge":
        from guest.edge import main as edge_main
        return edge_main(args)
    if args.cmd == "runner":
        from guest.runner import serve as runner_serve
        return runner_serve(args.port)
    if args.cmd == "probe":
        from guest.probe import main as probe_main
        return probe_main()
    from guest.checks.runner import main as check_main
    return check_main(args)


if __name__ == "__main__":
    sys.exit(main())
