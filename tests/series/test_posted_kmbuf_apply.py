"""The posted kmbuf series, as a reviewer types it first, on the real Debian 7.2 source.

`fuse-harness build --target v7.2 --series mbox:../shared/fixtures/kmbuf-v4/posted-v4.mbx`
must stop before any compile with one message: which patch of 25, file and hunk, the base
the cover letter names, and what to do. This runs the harness's own apply path
(`apply_for_target`, as `harness.kernel.obtain` calls it) on the source of target v7.2:
prepared (downloaded when missing) into the harness cache, indexed once, then a few
seconds per mbox. No kernel is built and no VM is started.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness import config, source
from harness.errors import HarnessError
from harness.series import SeriesApplyError, apply_for_target

FIRST = "io_uring/kbuf: refactor io_buf_pbuf_register() logic into generic helpers"
HUNK = "io_uring/kbuf.c hunk #1 (@@ -596,55 +596,71 @@ int io_manage_buffers_legacy("


@pytest.fixture(scope="session")
def debian_7_2() -> tuple[Path, str]:
    """(tree, identity) of target v7.2's source; a source that cannot be had fails the test."""
    spec = config.load_target("v7.2").source
    try:
        src = source.parse(spec)
        return src.prepare(), src.identity()
    except HarnessError as exc:
        pytest.fail(f"cannot prepare {spec} (the source these tests apply to): {exc}", pytrace=False)


@pytest.mark.parametrize(
    "name, base",
    [("posted-v4.mbx", "b71e635feefc"), ("posted-v2.mbx", "40fbbd64bba6")],
)
def test_posted_mbox_stops_with_patch_hunk_base_and_advice(
    kmbuf_fixtures: Path, debian_7_2: tuple[Path, str], name: str, base: str
) -> None:
    tree, identity = debian_7_2
    with pytest.raises(SeriesApplyError) as e:
        apply_for_target(tree, identity, f"mbox:{kmbuf_fixtures / name}")
    err = e.value
    ref = name.removesuffix(".mbx")
    assert err.message.startswith(f'series {ref}/local: patch 01/25 "{FIRST}" does not apply: {HUNK}'), err.message
    assert "preimage blob is unknown here, so no 3-way merge" in err.message
    said = f'cover letter: "This series is on top of commit {base} in the io-uring tree."'
    assert err.message.endswith(f". Its base is {base} ({said}); this tree is {identity}."), err.message
    assert "\n" not in err.message and err.base == base
    assert err.hint.startswith(f"use a tree at {base} (--source path:TREE, a kernel tree with {base} checked out), ")
    assert "or a version of the series forward-ported to this source (--series mbox:FILE" in err.hint
    assert re.search(r"git am log: \S+/am\.log; the patch: \S+/0001\.patch$", err.hint), err.hint
    # the cover letter (mail #1) was skipped: 25 patches, the first one is mail #2, nothing else was tried
    assert len(err.results) == 25 and err.results[0].file == f"{name} #2"
    assert [r.status for r in err.results] == ["failed"] + ["not-applied"] * 24
    log = err.log_path.read_text()
    assert log.count("\n### ") + log.startswith("### ") == 1 and "Patch is empty" not in log
