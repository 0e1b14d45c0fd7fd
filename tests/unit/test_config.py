import pytest

from harness import config
from harness.errors import ConfigError, SeriesError, UnknownTarget


def test_shipped_targets_load():
    assert {"v7.3", "v7.2"} <= set(config.supported())
    t = config.load_target("v7.3")
    assert t.source == "debian:linux-source-7.3"
    assert "zero-copy" in t.promises
    assert [p.name for p in t.fragments("default")] == ["base.config", "fuse-uring.config", "trim.config"]
    assert t.fragments("debug")[-1].name == "debug.config"


def test_default_target_is_v73(monkeypatch):
    monkeypatch.delenv("FUSE_HARNESS_TARGET", raising=False)
    assert config.load_target(None).name == "v7.3"


def test_unknown_target_lists_choices():
    with pytest.raises(UnknownTarget) as exc:
        config.load_target("v9.9")
    assert "v7.3" in exc.value.hint


def test_unknown_key_names_file_and_key(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("name: t\nsource: debian:linux-source-7.3\nkconfg: [base]\n")
    with pytest.raises(ConfigError) as exc:
        config.load_target(str(path))
    assert "kconfg" in exc.value.message and str(path) in exc.value.message


def test_unknown_transport_rejected(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("source: debian:linux-source-7.3\npromises: [bufring-magic]\n")
    with pytest.raises(ConfigError, match="bufring-magic"):
        config.load_target(str(path))


def test_missing_fragment_and_bad_profile(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("source: debian:linux-source-7.3\nkconfig: [base, nope]\n")
    t = config.load_target(str(path))
    with pytest.raises(ConfigError, match="nope"):
        t.fragments("default")
    with pytest.raises(ConfigError, match="profile"):
        t.fragments("fast")


def test_vm_settings_resolution(monkeypatch):
    monkeypatch.setenv("FUSE_HARNESS_CPUS", "4")
    monkeypatch.setenv("FUSE_HARNESS_MEMORY", "3G")
    s = config.vm_settings(memory="1G")
    assert s.cpus == 4 and s.memory == "1G"
    with pytest.raises(ConfigError):
        config.vm_settings(accel="hvf")


def test_time_scale_from_env_and_validation(monkeypatch):
    from harness import config as hcfg
    from harness.errors import ConfigError

    assert hcfg.vm_settings().time_scale == 1.0
    assert hcfg.vm_settings("debug").time_scale == hcfg.DEBUG_TIME_SCALE > 1  # KASAN + lockdep under TCG
    assert hcfg.vm_settings(time_scale=3.0).time_scale == 3.0
    monkeypatch.setenv("FUSE_HARNESS_TIME_SCALE", "2.5")
    assert hcfg.vm_settings().time_scale == 2.5
    assert hcfg.vm_settings("debug").time_scale == 2.5  # the environment beats the profile default
    assert hcfg.vm_settings("debug", time_scale=4).time_scale == 4.0  # and an explicit value beats both
    monkeypatch.setenv("FUSE_HARNESS_TIME_SCALE", "0")
    with pytest.raises(ConfigError, match="time scale"):
        hcfg.vm_settings()


def test_series_paths_resolve_from_the_target_file(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    from harness.config import load_target_file

    folder = tmp_path / "checkout" / "targets"
    folder.mkdir(parents=True)
    (folder / "t.yaml").write_text("source: debian:linux-source-7.2\nseries: mbox:../series.mbx\n"
                                   "series_hint: get it with b4\npromises: [kmbuf, kmbuf-zero-copy]\n")
    monkeypatch.chdir(tmp_path)
    t = load_target_file(folder / "t.yaml")
    assert t.series == f"mbox:{tmp_path / 'checkout' / 'series.mbx'}"
    with pytest.raises(SeriesError, match="its series mbox .*series.mbx is missing") as exc:
        t.check_series()
    assert exc.value.hint == "get it with b4"
    (tmp_path / "checkout" / "series.mbx").write_text("From x\n")
    t.check_series()


def test_kmbuf_v4_target_names_the_shared_fixture() -> None:
    t = config.load_target("kmbuf-v4")
    assert t.source == "debian:linux-source-7.2" and t.kernel_version == "7.2"
    assert t.series.endswith("/shared/fixtures/kmbuf-v4/ported-v4-on-7.2.mbx")
    assert set(t.promises) == {"legacy", "iovec", "kmbuf", "kmbuf-zero-copy"}
    assert "b4 am 20260116233044.1532965-1-joannelkoong@gmail.com" in t.series_hint


def test_bufring_v2_target_names_the_shared_fixture() -> None:
    t = config.load_target("bufring-v2")
    assert t.source == "debian:linux-source-7.2" and t.kernel_version == "7.2"
    assert t.series.endswith("/shared/fixtures/bufring-v2/bufring-v2-10-on-7.2.mbx")
    assert t.promises == ("legacy", "iovec", "bufring")
    assert "shared/fixtures/bufring-v2/" in t.series_hint
