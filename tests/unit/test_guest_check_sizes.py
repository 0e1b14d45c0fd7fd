"""The guest checks' workload sizes: each reaches the path its docstring names, worked out with
the server's own reply packer, and the cases run on a local folder with real tools (no FUSE
mount: the server's side is proven in the VM by the counters)."""

from __future__ import annotations

import argparse
import os
import shutil

import pytest

from guest.__main__ import parser
from guest.checks import io_cases, meta_cases, stress_cases
from guest.checks.context import Ctx
from guest.checks.server_proc import ServerProc
from guest.fuse.replies import Attr, pack_dirents
from harness.config import check_scale
from harness.errors import ConfigError

M = 131072  # serve's default max_payload: max_write 128 KiB, 32 pages


def _ctx(tmp_path, **kw) -> Ctx:  # noqa: ANN001
    mnt, scratch = tmp_path / "mnt", tmp_path / "scratch"
    mnt.mkdir()
    scratch.mkdir()
    diags: list[str] = []
    ctx = Ctx(str(mnt), str(scratch), "legacy", "memory", 3, kw.pop("fsx_ops", 50), diags.append, **kw)
    ctx.facts["diags"] = diags
    return ctx


@pytest.mark.parametrize("m", [8192, M, 1 << 20])
def test_io_sizes_keep_every_boundary(m: int) -> None:
    got = io_cases.sizes(m)
    assert {0, 1, 511, 4095, 4096, 4097, m - 1, m, m + 1} <= set(got)
    assert 4 * m + 3 in got  # several full requests and a short last one
    assert 16 * m + 3 in io_cases.sizes(m, scale=4)


def _listing(n: int, reply: int) -> list[int]:
    """How many entries each READDIRPLUS reply of `reply` bytes carries for the big directory
    (". ", ".." and n LONG_NAME entries), as the server packs them."""
    attr = Attr(2, 0, 0, 0.0, 0.0, 0.0, 0o40755, 2, 0, 0)
    names = [b".", b".."] + [meta_cases._entry(i).encode() for i in range(n)]
    counts, offset = [], 0
    while offset < len(names):
        _, count = pack_dirents([(name, attr, 2, 4) for name in names[offset:]], reply, True, offset)
        counts.append(count)
        offset += count
    return counts


def test_the_big_directory_takes_two_readdirplus_replies() -> None:
    """many_entries() is more than the 32 KiB reply of a glibc readdir() holds, by 8; the former
    100 short names fit one."""
    n = meta_cases.many_entries()
    assert all(len(meta_cases._entry(i)) == meta_cases.LONG_NAME == 255 for i in (0, n - 1))
    counts = _listing(n, meta_cases.READDIR_REPLY)
    assert len(counts) == 2 and counts[1] == 8, counts
    assert len(_listing(n - 8, meta_cases.READDIR_REPLY)) == 1  # 8 fewer: one reply would do
    assert meta_cases.many_entries(scale=4) == 4 * n


def test_dir_tree_without_counters_is_not_exercised(tmp_path) -> None:  # noqa: ANN001
    """The listing proof needs the server's counters: without a snapshot the case fails as not
    exercised, never passes."""
    with pytest.raises(AssertionError, match="not exercised: no counters snapshot"):
        meta_cases.dir_tree(_ctx(tmp_path))


def test_dir_tree_fails_a_listing_of_one_reply(tmp_path) -> None:  # noqa: ANN001
    """Counters that show two READDIR(PLUS) requests (one reply with entries, the empty end)
    fail the case as not exercised."""
    seen = iter([0, 2])
    ctx = _ctx(tmp_path, snapshot=lambda: {"per_opcode": {"READDIRPLUS": next(seen)}})
    with pytest.raises(AssertionError, match="not exercised: listing 87 entries took 2 READDIR"):
        meta_cases.dir_tree(ctx)


@pytest.mark.skipif(not all(shutil.which(t) for t in ("dd", "cp", "cat", "sha256sum")),
                    reason="needs dd, cp, cat and sha256sum")
@pytest.mark.parametrize("m", [8192, M])
def test_io_tools_model_holds_for_each_max_payload(tmp_path, m: int) -> None:  # noqa: ANN001
    """The dd seek lands inside the file whatever M is (at the smallest, 8192, the pages it
    overwrites are among those it reads): the model and the tools agree."""
    io_cases.io_tools(_ctx(tmp_path, max_payload=m))
    assert os.path.getsize(tmp_path / "mnt" / "dd-odd.bin") == (m // 1000 + 10) * 1000 > m


@pytest.mark.parametrize("ops", [6, 200])
def test_fsx_runs_every_kind(tmp_path, ops: int) -> None:  # noqa: ANN001
    ctx = _ctx(tmp_path, fsx_ops=ops)
    stress_cases.fsx(ctx)
    assert any("fsx ran" in d for d in ctx.facts["diags"])


def test_fsx_with_too_few_operations_is_not_exercised(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(AssertionError, match="not exercised: fsx ran"):
        stress_cases.fsx(_ctx(tmp_path, fsx_ops=3))


def test_check_scale_option() -> None:
    args = parser().parse_args(["check", "--transport", "iovec"])
    assert args.scale == 1 and args.fsx_ops is None
    assert parser().parse_args(["check", "--transport", "iovec", "--scale", "4"]).scale == 4
    for bad in ("0", "x", "1.5"):
        with pytest.raises(SystemExit):
            parser().parse_args(["check", "--transport", "iovec", "--scale", bad])


def test_fsx_ops_option_wants_one_of_each_kind() -> None:
    """--fsx-ops below the number of fsx's kinds could only end "not exercised": a usage error."""
    n = len(stress_cases.FSX_KINDS)
    assert parser().parse_args(["check", "--transport", "iovec", "--fsx-ops", str(n)]).fsx_ops == n
    for bad in (str(n - 1), "0", "-3", "x"):
        with pytest.raises(SystemExit):
            parser().parse_args(["check", "--transport", "iovec", "--fsx-ops", bad])


def test_check_scale_env(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.delenv("FUSE_HARNESS_CHECK_SCALE", raising=False)
    assert check_scale() == 1
    monkeypatch.setenv("FUSE_HARNESS_CHECK_SCALE", "4")
    assert check_scale() == 4
    for bad in ("0", "-2", "four"):
        monkeypatch.setenv("FUSE_HARNESS_CHECK_SCALE", bad)
        with pytest.raises(ConfigError, match="FUSE_HARNESS_CHECK_SCALE"):
            check_scale()


def test_no_snapshot_from_a_server_that_is_not_running(tmp_path) -> None:  # noqa: ANN001
    srv = ServerProc(str(tmp_path), str(tmp_path / "mnt"), "legacy", [])
    assert srv.snapshot(timeout=0.1) is None


def test_scale_error_names_the_option() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="--scale wants a whole number"):
        from guest.__main__ import _scale
        _scale("0")
