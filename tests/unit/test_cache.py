import json

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
