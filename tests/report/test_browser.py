"""report.html in a real browser: headless Chromium at 1400 px, a screenshot, no overflow.

Chromium is Debian's ``chromium`` package (``.ci/run`` installs it); where there is none
the test skips and says so.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_report import make_result, trial

from stabilizer.report import write_report
from stabilizer.scoring import DIVERGED_SCORE

#: Appended to a copy of the page: once everything loaded, the title says how far the page
#: overflows sideways and how many of its images did not decode.
_PROBE = """<script>
window.addEventListener('load', () => {
  const page = document.documentElement;
  const broken = [...document.images].filter(i => !i.complete || i.naturalWidth === 0);
  document.title = 'CHECK ' + JSON.stringify({overflow: page.scrollWidth - page.clientWidth,
    images: document.images.length, broken: broken.length, width: page.clientWidth});
});
</script>"""


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("no headless Chromium here: install Debian's chromium package "
                    "(apt-get install -y chromium), as .ci/run does")
    return found


def _browse(binary: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu",
                           "--hide-scrollbars", "--window-size=1400,1000", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_the_report_fits_1400_px_with_no_broken_image(tmp_path: Path) -> None:
    binary = _chromium()
    trials = [trial(0, 0.8, lr=1e-3), trial(1, 1.6, lr=8e-3, batch=64),
              trial(2, DIVERGED_SCORE, lr=0.5, verdict="diverged"),
              trial(3, None, state="PRUNED"), trial(4, None, state="FAIL"),
              *[trial(5 + i, 1.0 + 0.05 * i, lr=float(lr), batch=32 * (1 + i % 2))
                for i, lr in enumerate(np.geomspace(1e-3, 6e-3, 8))]]
    result = make_result(trials)
    folder = write_report(result, tmp_path / "report")
    page = (folder / "report.html").read_text()
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", _PROBE + "</body>"))

    dom = _browse(binary, "--virtual-time-budget=10000", "--dump-dom", probed.as_uri())
    found = re.search(r"<title>CHECK (\{.*?\})</title>", dom.stdout)
    assert found, dom.stderr[-2000:]
    check = json.loads(found.group(1).replace("&quot;", '"'))
    assert check["width"] >= 1300  # the window is 1400 px wide
    assert check["overflow"] <= 0, check  # no horizontal scrollbar
    assert check["images"] >= 5 and check["broken"] == 0, check

    shot = tmp_path / "report.png"
    taken = _browse(binary, "--window-size=1400,3000", f"--screenshot={shot}",
                    (folder / "report.html").as_uri())
    assert shot.is_file() and shot.stat().st_size > 50_000, taken.stderr[-2000:]
    assert shot.read_bytes().startswith(b"\x89PNG")

