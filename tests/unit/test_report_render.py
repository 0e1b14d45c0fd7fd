"""report.html as people see it: rendered by headless Chromium, checked on the screenshot's pixels.

Chromium is required (the harness's setup installs it); a missing browser fails, never skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from test_report import make_run

from harness.report import render_html
from harness.report.plots import COLOURS as TRANSPORT_COLOURS
from harness.report.style import COLOURS

INSTALL = "apt-get install -y --no-install-recommends chromium"
WIDTH, HEIGHT = 1280, 2000


@pytest.fixture(scope="module")
def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(f"chromium is not installed; the report render test needs it: {INSTALL}", pytrace=False)


def screenshot(browser: str, html: Path, tmp: Path):
    """The page at 1280x2000 as an (H, W, 3) float array in 0..1."""
    from matplotlib.image import imread

    png = tmp / "shot.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp / 'profile'}", f"--window-size={WIDTH},{HEIGHT}", f"--screenshot={png}",
           html.resolve().as_uri()]
    env = {**os.environ, "HOME": str(tmp)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=tmp)
    assert png.is_file(), f"chromium wrote no screenshot (rc {proc.returncode}):\n{proc.stderr[-2000:]}"
    pixels = imread(png)[:, :, :3]
    assert pixels.shape[:2] == (HEIGHT, WIDTH)
    return pixels


def share(pixels, hex_colour: str, tol: float = 0.04) -> float:
    """Fraction of pixels within tol (per channel, 0..1) of hex_colour."""
    import numpy as np

    rgb = np.array([int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    return float((np.abs(pixels - rgb) <= tol).all(axis=2).mean())


def test_failing_run_with_benchmarks(chromium: str, tmp_path: Path) -> None:
    html = render_html(make_run(tmp_path), tmp_path / "no-known-issues.yaml")
    px = screenshot(chromium, html, tmp_path)
    # not blank: many distinct colours, mostly white page with dark text
    assert px.std() > 0.1
    assert len({tuple(p) for p in (px[::7, ::7] * 255).astype(int).reshape(-1, 3)}) > 200
    band = px[:110]
    assert share(band, COLOURS["FAIL"]) > 0.5, "the header band is not FAIL red"
    assert share(band, COLOURS["PASS"]) < 0.01
    assert share(px, COLOURS["FAIL"]) > 0.03
    # the embedded benchmark charts are drawn: zero-copy bars have a colour nothing else uses
    assert share(px[110:], TRANSPORT_COLOURS["zero-copy"], tol=0.08) > 0.002, "benchmark charts not visible"


def test_passing_run_is_green(chromium: str, tmp_path: Path) -> None:
    html = render_html(make_run(tmp_path, bench=False, extras=False, failing=False), tmp_path / "none.yaml")
    px = screenshot(chromium, html, tmp_path)
    band = px[:110]
    assert share(band, COLOURS["PASS"]) > 0.5, "the header band is not PASS green"
    assert share(px, COLOURS["FAIL"]) < 0.001
