"""`python3 -m guest serve`: its arguments and its call of guest.daemon.serve.

Apart from the rest of the CLI (guest/__main__.py) so that a check's server, a fork of the
check process (guest.checks.server_proc), runs it without the CLI that dispatches to the
checks. The server options are shared with `check`, which passes them on to its server.
"""

from __future__ import annotations

import argparse
import sys

from guest import TRANSPORTS, ZERO_COPY

#: The CLI's name in usage lines and errors.
PROG = "python3 -m guest"


def server_opts(p: argparse.ArgumentParser) -> None:
    """The server options of `serve` and `check`."""
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


def add_parser(sub) -> None:  # noqa: ANN001 (argparse's subparsers action)
    """The `serve` subcommand's arguments."""
    s = sub.add_parser("serve", help="run the server in the foreground")
    s.add_argument("--mount", required=True)
    server_opts(s)
    s.add_argument("--ready-file", help="JSON written once the transport is serving")
    s.add_argument("--counters", help="counters JSON written at exit and on SIGUSR1")
    s.add_argument("--fallback", action="store_true",
                   help="on setup failure keep serving over /dev/fuse (else exit 3)")
    s.add_argument("--drop-uid", type=int, default=None,
                   help="setuid to this uid after mounting (unprivileged server)")


def main(args: argparse.Namespace) -> int:
    """Serve in the foreground; the exit code: guest.daemon's (0, or 3 on setup failure), 4
    for a bad combination of options, 3 for an OSError before serving began."""
    from guest.daemon import ServeArgs, serve  # the server's modules: only for this command

    backend = args.backend or ("passthrough" if args.transport in ZERO_COPY else "memory")
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


def cli(argv: list[str]) -> int:
    """`python3 -m guest ARGV` for the serve command alone (ARGV: "serve" and its options):
    argparse's exit (2) for anything else."""
    ap = argparse.ArgumentParser(prog=PROG)
    add_parser(ap.add_subparsers(dest="cmd", required=True))
    return main(ap.parse_args(argv))
