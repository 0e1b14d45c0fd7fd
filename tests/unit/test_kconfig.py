from pathlib import Path

import pytest

from harness import config, kconfig
from harness.errors import KconfigError


def make_tree(tmp_path: Path) -> Path:
    """A toy Kconfig tree: FOO depends on BAR && BAZ."""
    tree = tmp_path / "tree"
    (tree / "fs" / "foo").mkdir(parents=True)
    (tree / "Kconfig").write_text('source "fs/foo/Kconfig"\n')
    (tree / "fs" / "foo" / "Kconfig").write_text(
        "config FOO\n\ttristate \"foo\"\n\tdepends on BAR && BAZ\n\thelp\n\t  x\n\n"
        "config BAR\n\tbool \"bar\"\n\nconfig BAZ\n\tbool \"baz\"\n"
    )
    return tree


def test_parse_config():
    text = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"x\"\nCONFIG_D=60\n# comment\n"
    assert kconfig.parse_config(text) == {"A": "y", "B": "n", "C": '"x"', "D": "60"}


def test_dropped_option_names_missing_dependency(tmp_path):
    tree = make_tree(tmp_path)
    frag = tmp_path / "frag.config"
    frag.write_text("CONFIG_FOO=y\nCONFIG_BAR=y\n")
    dot = tmp_path / ".config"
    dot.write_text("CONFIG_BAR=y\n# CONFIG_BAZ is not set\n")
    with pytest.raises(KconfigError) as exc:
        kconfig.verify(tree, dot, [frag])
    msg = exc.value.message
    assert "CONFIG_FOO=y (from frag.config) is not set" in msg
    assert "BAR && BAZ" in msg and "not enabled: BAZ" in msg
    assert "fs/foo/Kconfig" in msg


def test_unknown_option_is_named(tmp_path):
    tree = make_tree(tmp_path)
    frag = tmp_path / "frag.config"
    frag.write_text("CONFIG_FUSE_IO_URNG=y\n")
    dot = tmp_path / ".config"
    dot.write_text("")
    with pytest.raises(KconfigError, match="no such option"):
        kconfig.verify(tree, dot, [frag])


def test_holds_including_not_set(tmp_path):
    tree = make_tree(tmp_path)
    frag = tmp_path / "frag.config"
    frag.write_text("CONFIG_BAR=y\n# CONFIG_BAZ is not set\nCONFIG_N=n\n")
    dot = tmp_path / ".config"
    dot.write_text("CONFIG_BAR=y\n")
    kconfig.verify(tree, dot, [frag])


def test_later_fragment_wins(tmp_path):
    a = tmp_path / "a.config"
    b = tmp_path / "b.config"
    a.write_text("CONFIG_X=y\n")
    b.write_text("# CONFIG_X is not set\n")
    reqs = kconfig.requests_of([a, b])
    assert [(r.name, r.value, r.fragment) for r in reqs] == [("X", "n", "b.config")]


def test_shipped_fragments_parse():
    root = Path(__file__).parent.parent.parent / "kconfigs"
    reqs = kconfig.requests_of(sorted(root.glob("*.config")))
    names = {r.name for r in reqs}
    assert {"FUSE_IO_URING", "IO_URING", "KASAN", "DEBUG_INFO_NONE"} <= names


def test_selected_option_names_its_selector(tmp_path):
    tree = make_tree(tmp_path)
    (tree / "fs" / "foo" / "Kconfig").write_text(
        (tree / "fs" / "foo" / "Kconfig").read_text() + "\nconfig QUX\n\tbool \"qux\"\n\tselect BAR\n")
    frag = tmp_path / "frag.config"
    frag.write_text("# CONFIG_BAR is not set\n")
    dot = tmp_path / ".config"
    dot.write_text("CONFIG_BAR=y\nCONFIG_QUX=y\n")
    with pytest.raises(KconfigError, match="selected by QUX"):
        kconfig.verify(tree, dot, [frag])


@pytest.mark.parametrize("profile", sorted(config.PROFILES))
def test_no_profile_asks_to_drop_what_its_lockdep_selects(profile):
    """LOCKDEP (PROVE_LOCKING) selects KALLSYMS_ALL (lib/Kconfig.debug): a profile with it must
    not inherit trim.config's `KALLSYMS_ALL is not set`, or verify() stops its build."""
    reqs = {r.name: r.value for r in kconfig.requests_of(list(config.load_target("v7.3").fragments(profile)))}
    if reqs.get("PROVE_LOCKING") == "y":
        assert reqs.get("KALLSYMS_ALL") == "y", profile
