"""Shared test configuration: the fuse-harness plugin is loaded through its entry point.

Test input that is not part of the project (the posted kmbuf series mboxes) lives beside the
checkout in `../shared/fixtures/`; `kmbuf_fixtures` finds it there or fails saying so.
"""

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("fuse-harness").addoption(
        "--parity-seeds", default=None, metavar="N",
        help="transport parity (tests/vm/test_transport_parity.py): run N seeds, or the comma list a,b "
             "(default: the fixed seeds; env FUSE_HARNESS_PARITY_SEEDS)")

#: `../shared/fixtures/kmbuf-v4` from the project root (see its README.md).
KMBUF_FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "kmbuf-v4"


@pytest.fixture(scope="session")
def kmbuf_fixtures() -> Path:
    """The folder with posted-v4.mbx, posted-v2.mbx and ported-v4-on-7.2.mbx; a test that needs
    it fails (never skips) when it is missing."""
    missing = [
        n for n in ("posted-v4.mbx", "posted-v2.mbx", "ported-v4-on-7.2.mbx") if not (KMBUF_FIXTURES / n).is_file()
    ]
    if missing:
        pytest.fail(
            f"test input missing: {KMBUF_FIXTURES} (../shared/fixtures/kmbuf-v4 from the project root) lacks "
            f"{', '.join(missing)}; these tests read the posted kmbuf series from there: put the shared "
            "fixtures folder beside the checkout",
            pytrace=False,
        )
    return KMBUF_FIXTURES


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Crash probes (a test function with `crash_probe = True`) run at the end of the session, so
    the oops they may cause costs no other test its guest (the plugin replaces a dead guest)."""
    items.sort(key=lambda item: bool(getattr(getattr(item, "function", None), "crash_probe", False)))
