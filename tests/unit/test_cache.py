import json

import pytest

from harness import cache


def test_cache_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv("FUSE_HARNESS_CACHE", str(tmp_path / "c"))
    assert cache.cache_root() == tmp_path / "c"
    monkeypatch.delenv("FUSE_HARNESS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache.cache_root() == tmp_path / "x" / "fuse-harness"


def test_run_dirs_are_numbered_and_never_reused(tmp_path):
    a = cache.new_run_dir(tmp_path, "v7.3-default")
    b = cache.new_run_dir(tmp_path, "v7.3-default")
    assert a.name == "001-v7.3-default" and b.name == "002-v7.3-default"


def test_safe_name_and_keys():
    assert cache.safe_name("debian-linux-source-7.3-7.3.4-1~bpo13+1") == "debian-linux-source-7.3-7.3.4-1_bpo13_1"
    assert cache.key_of("a", [1, 2]) == cache.key_of("a", [1, 2]) != cache.key_of("a", [2, 1])


def test_atomic_json(tmp_path):
    p = tmp_path / "m.json"
    cache.write_json_atomic(p, {"b": 1, "a": 2})
    assert json.loads(p.read_text()) == {"a": 2, "b": 1}
    assert p.read_text().index('"a"') < p.read_text().index('"b"')


def test_build_folder_lives_inside_cache_owned_trees(tmp_path, monkeypatch):
    """Kbuild calls the source `..` from a direct subfolder: same command lines, ccache hits."""
    from harness.build import place
    from harness.cache import INTREE_PREFIX

    monkeypatch.setenv("FUSE_HARNESS_CACHE", str(tmp_path / "cache"))
    owned = tmp_path / "cache" / "sources" / "linux"
    owned.mkdir(parents=True)
    link = place(owned, "v7.3-default-abc")
    assert link.is_symlink() and link.resolve() == (owned / f"{INTREE_PREFIX}v7.3-default-abc").resolve()
    assert link.resolve().parent == owned.resolve()
    assert place(owned, "v7.3-default-abc") == link  # reused
    (owned / f"{INTREE_PREFIX}v7.3-default-abc").rmdir()  # the scratch tree was replaced
    assert place(owned, "v7.3-default-abc").resolve().is_dir()
    users = tmp_path / "home" / "linux"
    users.mkdir(parents=True)
    plain = place(users, "v7.3-default-def")
    assert not plain.is_symlink() and not plain.exists() and not any(users.iterdir())


def test_indexing_and_copying_a_tree_skip_its_build_folders(tmp_path):
    from harness.cache import INTREE_PREFIX
    from harness.series import gitops

    src = tmp_path / "src"
    (src / "fs").mkdir(parents=True)
    (src / "fs" / "a.c").write_text("int a;\n")
    (src / f"{INTREE_PREFIX}x" / "fs").mkdir(parents=True)
    (src / f"{INTREE_PREFIX}x" / "fs" / "a.o").write_text("obj")
    repo, base = gitops.base_repo_for_tree(src, tmp_path / "repos", "id-1")
    files = gitops.git("--git-dir", str(repo), "ls-tree", "-r", "--name-only", base).stdout.split()
    assert files == ["fs/a.c"]
    gitops.copy_worktree(repo, src, tmp_path / "tree", base)
    assert sorted(p.name for p in (tmp_path / "tree").iterdir()) == [".git", "fs"]


def test_exclusive_makes_a_second_holder_wait(tmp_path, monkeypatch):
    import threading
    import time

    from harness.cache import exclusive

    monkeypatch.setenv("FUSE_HARNESS_CACHE", str(tmp_path))
    order = []

    def second():
        with exclusive("obtain", "kernel"):
            order.append("second")

    with exclusive("obtain", "kernel"):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.3)
        order.append("first done")
    thread.join(5)
    assert order == ["first done", "second"]


@pytest.mark.parametrize(("held", "said"), [(0.2, False), (1.2, True)])
def test_exclusive_says_it_waits_only_when_the_wait_lasts(tmp_path, monkeypatch, caplog, held, said):
    """A second holder that gets the lock within QUIET_WAIT (an xdist worker behind another one
    that only found the build done) prints nothing; a longer wait is named."""
    import logging
    import threading
    import time

    monkeypatch.setenv("FUSE_HARNESS_CACHE", str(tmp_path))
    monkeypatch.setattr(cache, "QUIET_WAIT", 0.6)
    got = threading.Event()

    def second():
        with cache.exclusive("obtain", "kernel"):
            got.set()

    with caplog.at_level(logging.INFO, logger="harness"), cache.exclusive("obtain", "kernel"):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(held)
    thread.join(5)
    assert got.is_set()
    assert ("waiting for another fuse-harness process" in caplog.text) is said
