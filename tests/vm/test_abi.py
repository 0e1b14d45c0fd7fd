"""ABI safety: the guest's struct layouts against the uapi headers of the kernel under test,
and the transports the target promises against what the kernel's fuse.h defines."""

from __future__ import annotations

from harness.abi_check import check_abi
from harness.build import ensure_headers


def test_promised_transports_exist_in_uapi(kernel):
    abi = kernel.abi
    missing = abi.missing(kernel.promises())
    assert not missing, (
        f"{kernel.target.name} promises {', '.join(missing)} but the kernel's include/uapi/linux/fuse.h "
        f"(FUSE minor {abi.minor}, generations {', '.join(abi.generations)}) lacks: "
        + "; ".join(f"{t}: {abi.why(t)}" for t in missing)
    )


def test_guest_layouts_match_uapi_headers(kernel):
    """Compile an offsetof/sizeof/constant program against `make headers` of this very kernel,
    for the newest ring generation it has (D for the kmbuf series, C for 7.3, B for the bufring
    series, else A)."""
    include = ensure_headers(kernel.tree, kernel.built.build_dir)
    generation = kernel.abi.ring_generation
    mismatches = check_abi(include, generation)
    assert not mismatches, "guest struct layouts differ from the kernel's uapi:\n" + "\n".join(
        str(m) for m in mismatches)
