"""Golden tests of the terminal reporters at 80 and 160 columns (tests/golden/).

The inputs are saved report/compare/plan JSON (tests/golden/inputs/), so these goldens change
only when the presentation changes, not when the model's numbers do. After an intended change,
regenerate and review the diff:

    PYTHONPATH=. .venv/bin/python -m pytest -q tests/test_terminal_golden.py --update-golden
    (or STORAGECARBON_UPDATE_GOLDEN=1)
"""

import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console

from storagecarbon.plan.cli import render_compare, render_plan
from storagecarbon.report.terminal import render

GOLDEN = Path(__file__).resolve().parent / "golden"
INPUTS = GOLDEN / "inputs"
WIDTHS = (80, 160)
SCI = re.compile(r"(?<![\w.])\d+(\.\d+)?e[+-]\d+\b", re.I)


def _console(width: int) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=width, color_system=None, force_terminal=False, legacy_windows=False,
                   emoji=False, highlight=False), buf


def _load(name: str) -> dict:
    return json.loads((INPUTS / name).read_text())


def _devices(con: Console) -> None:
    import storagecarbon.cli as cli
    import storagecarbon.cli.devices as devices

    old = devices.out
    devices.out = con
    try:
        assert cli.main(["devices", "list"]) == 0
    finally:
        devices.out = old


CASES = {
    "profile_modeled": lambda con: render(_load("modeled_llama70b_report.json"), con),
    "profile_measured": lambda con: render(_load("measured_tiny_report.json"), con),
    "profile_accounting": lambda con: render(_load("accounting_keys_report.json"), con),
    "profile_verbose": lambda con: render(_load("measured_tiny_report.json"), con, verbose=True),
    "compare": lambda con: render_compare(_load("compare_llama70b.json"), con),
    "plan": lambda con: render_plan(_load("plan_llama70b.json"), con, 10),
    "devices_list": _devices,
}


def rendered(case: str, width: int) -> str:
    con, buf = _console(width)
    CASES[case](con)
    return buf.getvalue()


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case, width, update_golden):
    # GIVEN a saved input, WHEN rendered at this width, THEN the text is the committed golden
    text = rendered(case, width)
    path = GOLDEN / f"{case}_{width}.txt"
    if update_golden or not path.exists():
        path.write_text(text, encoding="utf-8")
        if not update_golden:
            pytest.fail(f"{path.name} did not exist and was written: review it and commit")
    assert text == path.read_text(encoding="utf-8"), (
        f"{path.name} differs; if intended, rerun with --update-golden and review the diff")


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_fits_and_reads(case, width):
    text = rendered(case, width)
    lines = text.splitlines()
    # every line fits the terminal
    too_wide = [ln for ln in lines if len(ln) > width]
    assert not too_wide, too_wide[:3]
    # no scientific notation, no word cut by a column (rich marks a cut with an ellipsis)
    assert not SCI.search(text), SCI.search(text)
    assert "…" not in text
    # no mixed units inside one number ("0.000717 µg" style leftovers) and no raw JSON
    assert '{"' not in text and "{'" not in text


def test_missing_is_never_zero():
    # GIVEN a report whose host operational carbon and energy are missing (None)
    text = rendered("profile_accounting", 80)
    host_carbon = next(ln for ln in text.splitlines() if ln.startswith("host ") and "missing" in ln)
    # THEN the host row says missing where the figures are absent, and the headline carries kWh and the share
    assert "0 g" not in host_carbon
    assert "kWh" in text and "storage share" in text and "excludes" in text
    assert "Offload ledger" in text and "over rating" in text


def test_plan_answers_what_to_buy():
    text = rendered("plan", 80)
    assert "What to buy" in text and "base scenario" in text
    assert re.search(r"saves \d.*per 1k tokens = \d+%", text.replace("\n", " "))
    assert "P(pick lower)" in text
    assert "tight" in text  # TPOT p90 88.6 ms against 100 ms
    # grid and lifetime are what-if axes beside the pick, not part of it
    buy = text.split("What to buy", 1)[1].split("The pick on grid", 1)[0]
    assert "grid" not in buy and "lifetime" not in buy
    assert "What if" in text and "lifetime A" in text


def test_compare_ranks_only_candidates():
    text = rendered("compare", 80)
    assert "llama70b_old_gpus (MODELED) — out: TTFT p90" in text.replace("\n", " ").replace("  ", " ") or \
        "out: TTFT p90" in text
    lowest = next(ln for ln in text.splitlines() if "lowest " in ln)
    assert "llama70b_old_gpus" not in lowest


def test_plan_saving_is_paired_with_the_sweep():
    # GIVEN the saved plan: the pick re-evaluated beside the base hardware (vs_base) must give the
    # sweep's own figures for the pick, i.e. the same draws (paired), not a fresh sample
    pu = _load("plan_llama70b.json")["purchase"]
    vs, pick = pu["vs_base"], pu["pick"]["per_1k_tokens_gco2e"]
    for q in ("p5", "p50", "p95"):
        assert abs(vs["pick_per_1k_tokens_gco2e"][q] - pick[q]) <= 1e-9 * abs(pick[q])
    sv = vs["saving_per_1k_gco2e"]
    assert sv["p5"] <= sv["p50"] <= sv["p95"]
    assert 0 < vs["p_pick_lower"] <= 1 and (vs["p_pick_lower"] > 0.5) == (sv["p50"] > 0)
