"""The units module every reporter writes numbers with: no scientific notation, one unit per
column, three significant figures, missing is 'missing'."""

import math
import re

from hypothesis import given, strategies as st

from storagecarbon.report import units as U

finite = st.floats(min_value=-1e18, max_value=1e18, allow_nan=False, allow_infinity=False)
positive = st.floats(min_value=1e-12, max_value=1e18, allow_nan=False, allow_infinity=False)


@given(finite)
def test_numbers_never_use_scientific_notation(x):
    for s in (U.num(x), U.grams(x), U.nbytes(abs(x)), U.seconds(abs(x)), U.joules(abs(x))):
        assert "e+" not in s and "e-" not in s and "E" not in s


@given(positive)
def test_a_quantity_reads_back_within_three_significant_figures(x):
    # GIVEN a mass, WHEN written in its unit THEN reading it back gives x within rounding of 3 s.f.
    txt = U.grams(x)
    number, unit = txt.rsplit(" ", 1)
    size = dict((u, s) for s, u in U.MASS)[unit]
    if number.startswith("<"):
        assert x / size < 10 ** -U.MAX_DECIMALS * 1.0001
        return
    back = float(number.replace(",", "")) * size
    assert math.isclose(back, x, rel_tol=5e-3) or abs(back - x) <= 0.5 * 10 ** -U.MAX_DECIMALS * size


@given(st.lists(st.one_of(st.none(), st.floats(min_value=1e-12, max_value=1e11)), min_size=1, max_size=12))
def test_a_column_has_one_unit_and_no_value_above_six_digits(vals):
    col = U.Column(vals, U.MASS)
    cells = [col(v) for v in vals]
    for v, c in zip(vals, cells):
        if v is None:
            assert c == U.MISSING
        else:
            assert not re.search(r"[a-zµ]", c), c  # the unit is in the header, never in a cell
            digits = c.replace(",", "").split(".")[0].lstrip("<-")
            assert len(digits) <= 6


def test_examples_from_the_issue():
    assert U.nbytes(3.79e15) == "3.79 PB"
    assert U.seconds(1010) == "16.8 min"
    assert U.millis(20780) == "20.8 s"
    assert U.millis(88.6) == "88.6 ms"
    assert U.band({"p5": 0.116, "p50": 0.139, "p95": 0.163}) == "139 [116–163] mg"
    assert U.grams(None) == "missing" and U.band(None) == "missing"
    col = U.Column([{"p5": 0.7, "p50": 2.18, "p95": 5.73}, {"p5": 91.0, "p50": 92.9, "p95": 95.1}], U.MASS)
    assert col.unit == "g" and col.band({"p5": 0.7, "p50": 2.18, "p95": 5.73}) == "2.18 [0.700–5.73]"
    assert U.share(0.284) == "28%" and U.prob(0.9996) == ">0.99" and U.count(983975) == "983,975"


def test_progress_logs_slow_steps_and_stays_silent_off_a_terminal():
    import io

    from rich.console import Console

    from storagecarbon.report.progress import progress

    t = iter([0.0, 0.1, 2.6, 2.7, 3.0])
    buf = io.StringIO()
    con = Console(file=buf, force_terminal=True, width=80, color_system=None)
    with progress(con, "profile", clock=lambda: next(t)) as step:
        step("building")      # t=0.1
        step("running vLLM")  # t=2.6: 'building' took 2.5 s -> logged
        step("attributing")   # t=2.7: 0.1 s -> not logged
    text = buf.getvalue()
    assert "✓ building (2.50 s)" in text and "✓ running vLLM" not in text
    quiet = io.StringIO()
    with progress(Console(file=quiet, force_terminal=False), "plan") as step:
        step("ranking")
    assert quiet.getvalue() == ""
