"""Reproducers find the checkout at run time and hold no path of the machine that wrote them."""

from __future__ import annotations

import importlib.util
import os
import subprocess

from harness.config import REPO
from harness.results.meta import write_reproducer


def _edge_helpers():
    spec = importlib.util.spec_from_file_location("edge_helpers", REPO / "tests" / "vm" / "edge_helpers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_reproducer_finds_the_checkout_it_sits_in(tmp_path):
    checkout = tmp_path / "elsewhere"
    subprocess.run(["git", "init", "-q", str(checkout)], check=True)
    run_dir = checkout / "results" / "007-v7.3-default"
    run_dir.mkdir(parents=True)
    script = write_reproducer(run_dir, ["pwd"])
    text = script.read_text()
    assert str(REPO) not in text and str(tmp_path) not in text
    env = {k: v for k, v in os.environ.items() if k != "FUSE_HARNESS_CHECKOUT"}
    out = subprocess.run([str(script)], cwd="/", env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(checkout.resolve())
    other = tmp_path / "other"
    other.mkdir()
    out = subprocess.run([str(script)], cwd="/", env={**env, "FUSE_HARNESS_CHECKOUT": str(other)},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(other)


def test_guest_command_is_rewritten_to_the_users_checkout():
    eh = _edge_helpers()
    cmd = eh.guest_command("request-timeout", "--transport iovec", 3.0)
    assert str(REPO) in cmd  # what the session's own guest runs
    portable = eh.in_checkout(cmd)
    assert str(REPO) not in portable
    assert portable.startswith('cd "$PWD" && FUSE_HARNESS_TIME_SCALE=3 ')
    assert portable.endswith("-m guest edge request-timeout --transport iovec")
