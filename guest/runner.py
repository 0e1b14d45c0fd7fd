"""`python3 -S -m guest.runner --port N` (or `python3 -m guest runner --port N`): a resident
process that runs `python3 -m guest ...` commands without starting Python again.

One runner per boot, started by the guest's boot script (harness/vm/guestsh.py keepalive)
or by the host over SSH, as `python3 -S -m guest.runner --port N`: no site, no argparse,
nothing but sockets imported before it listens (1.3-2.3 s after exec under TCG, against
2.5-4.2 s for `python3 -m guest runner`, measured warm in a guest). It listens at once on a
TCP port of the guest's loopback; the host
reaches it through the SSH connection it already has (a direct-tcpip channel), so no process
is spawned per command. Between connections it imports the guest package one module at a
time (every module a command may need: over 9p under TCG that is seconds per command), so
later commands find them loaded. Imports and forks happen in the one thread, never at once:
a fork while another thread holds the import lock could leave the child stuck. A command
that arrives before the imports are done imports what it needs itself.

Protocol, per connection: one JSON line `{"argv": [...], "env": {...}, "cwd": "..."}`,
answered by frames `kind(1 byte) length(4 bytes, big endian) data`: `O` stdout bytes, `E`
stderr bytes, then `X` with the exit code as ASCII. A command runs in a child forked from
the runner (its own session, the argv as `python3 -m guest` would get it); when the host
closes the connection first (its timeout), the child's process group is killed.

This module is the entry and binds the CLI; the machinery is guest/resident.py (which the
CLI's `runner` subcommand starts with its own main).
"""

from __future__ import annotations

import sys

from guest.resident import serve


def cli_main(argv: list[str]) -> int:
    """`python3 -m guest ARGV`: the guest CLI's main, imported by the first command that needs
    it (the runner listens before; its preload imports guest.__main__ between connections)."""
    from guest.__main__ import main

    return main(argv)


if __name__ == "__main__":  # `python3 -S -m guest.runner --port N`: see the module docstring
    if len(sys.argv) != 3 or sys.argv[1] != "--port" or not sys.argv[2].isdigit():
        sys.exit("usage: python3 -S -m guest.runner --port N")
    serve(int(sys.argv[2]), cli_main)
