"""Reports of a run folder: report.html, a mailing-list text table, a 0-day-style summary.

    fuse-harness report RUN_DIR [--html | --text | --0day]
    python -m harness.report RUN_DIR [--html | --text | --0day]

The input files and their shapes are documented in harness.report.data.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from harness.errors import HarnessError
from harness.report.html import render_html
from harness.report.text import render_0day, render_text

__all__ = ["add_arguments", "main", "render_0day", "render_html", "render_text", "run"]

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `report` subcommand's arguments (shared by harness.cli and `python -m harness.report`)."""
    parser.add_argument("run_dir", type=Path, help="a run folder, e.g. results/001-v7.3-default")
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument("--html", dest="format", action="store_const", const="html",
                     help="write RUN_DIR/report.html and print its path (default)")
    fmt.add_argument("--text", dest="format", action="store_const", const="text",
                     help="print a plain-text result table for a mailing-list reply")
    fmt.add_argument("--0day", dest="format", action="store_const", const="0day",
                     help="print a 0-day-bot-style summary with reproducer and first splat")
    parser.add_argument("--known-issues", type=Path, default=None,
                        help="known-issues YAML (default: known-issues.yaml in the harness checkout)")
    parser.set_defaults(format="html")


def run(args: argparse.Namespace) -> int:
    """Render the requested report; raises HarnessError on a bad run folder."""
    if args.format == "text":
        sys.stdout.write(render_text(args.run_dir, args.known_issues))
    elif args.format == "0day":
        sys.stdout.write(render_0day(args.run_dir, args.known_issues))
    else:
        print(render_html(args.run_dir, args.known_issues))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m harness.report`; exit 0, or 3/4 on an infrastructure/user error."""
    from harness import log as hlog

    parser = argparse.ArgumentParser(prog="fuse-harness report", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    hlog.setup()
    try:
        return run(args)
    except HarnessError as exc:
        log.error("%s", exc)
        return exc.exit_code
