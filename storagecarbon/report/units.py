"""How every reporter writes a number: grams, bytes, energy, time, shares and probabilities.

One module, used by the terminal, the HTML and the planner's text, so that a figure reads the
same everywhere:

- no scientific notation: a value is written with three significant figures in a unit from a
  ladder (µg … t, B … PB, J … MWh, µs … h);
- one unit per column: :class:`Column` picks the unit from the largest value in the column and
  writes every cell in it (a column never mixes mg and g), the unit going into the header;
- a band (P5/P50/P95) is written in one unit, ``139 [116–163] mg``;
- ``None`` (a figure without data) is written ``missing``, never ``0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence, TypeGuard

MISSING = "missing"
SIG = 3            # significant figures of every figure
MAX_DECIMALS = 4   # below 10^-4 of its column's unit a non-zero value reads "<0.0001"

from ..carbon.sampling import J_PER_KWH  # noqa: E402  (the one definition)
TIGHT_HEADROOM = 0.15  # an SLO met with less headroom than this (1 − p90/target) is flagged as tight

Ladder = Sequence[tuple[float, str]]   # (size of the unit in base units, unit name), largest first

MASS: Ladder = ((1e6, "t"), (1e3, "kg"), (1.0, "g"), (1e-3, "mg"), (1e-6, "µg"))           # base: gram
BYTES: Ladder = ((1e15, "PB"), (1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB"), (1.0, "B"))  # base: byte
ENERGY: Ladder = ((3.6e9, "MWh"), (J_PER_KWH, "kWh"), (3.6e3, "Wh"), (1.0, "J"))          # base: joule
TIME: Ladder = ((3600.0, "h"), (60.0, "min"), (1.0, "s"), (1e-3, "ms"), (1e-6, "µs"))      # base: second
RATE: Ladder = ((1e12, "TB/s"), (1e9, "GB/s"), (1e6, "MB/s"), (1e3, "kB/s"), (1.0, "B/s"))
POWER: Ladder = ((1e6, "MW"), (1e3, "kW"), (1.0, "W"), (1e-3, "mW"), (1e-6, "µW"))
COUNT: Ladder = ((1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""))


def _ok(x: Any) -> TypeGuard[float]:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def decimals_for(y: float, sig: int = SIG) -> int:
    """Decimals that give ``y`` ``sig`` significant figures (0 for values of ``10**sig`` and above)."""
    if y == 0 or not math.isfinite(y):
        return 0
    return max(0, sig - 1 - math.floor(math.log10(abs(y))))


def num(y: float | None, decimals: int | None = None, *, sig: int = SIG, grouping: bool = True) -> str:
    """A plain number, no exponent: ``sig`` significant figures unless ``decimals`` is given."""
    if not _ok(y):
        return MISSING
    assert y is not None
    if y == 0:
        return "0"
    d = decimals_for(y, sig) if decimals is None else decimals
    d = min(d, MAX_DECIMALS)
    s = f"{y:,.{d}f}" if grouping else f"{y:.{d}f}"
    if float(s.replace(",", "")) == 0:
        return ("-" if y < 0 else "") + "<" + f"{10 ** -d:.{d}f}"
    return s


@dataclass(frozen=True)
class Scale:
    size: float
    unit: str

    def of(self, x: float | None, decimals: int | None = None) -> str:
        return num(None if not _ok(x) else x / self.size, decimals)


def scale_for(values: Iterable[float | None], ladder: Ladder) -> Scale:
    """The unit that writes the largest magnitude among ``values`` as 1 … 999."""
    m = max((abs(v) for v in values if _ok(v) and v != 0), default=0.0)
    for size, unit in ladder:
        if m >= size * 0.9995:   # 999.6 g reads 1.00 kg, not 1,000 g
            return Scale(size, unit)
    size, unit = ladder[-1]
    return Scale(size, unit)


def column_scale(values: Iterable[float | None], ladder: Ladder, max_digits: int = 5) -> Scale:
    """One unit for a column: the largest value's unit, stepped down while that brings the small
    values to 0.01 or more and the largest stays below ``10**max_digits``."""
    vals = [abs(v) for v in values if _ok(v) and v != 0]
    top = scale_for(vals, ladder)
    if not vals:
        return top
    lo, hi = min(vals), max(vals)
    sizes = [s for s, _ in ladder]
    i = sizes.index(top.size)
    for j in range(i, len(ladder)):
        size, unit = ladder[j]
        if hi / size >= 10 ** max_digits:
            break
        if lo / size >= 0.01:
            return Scale(size, unit)
    return top


def _join(number: str, unit: str) -> str:
    if number == MISSING or not unit:
        return number
    return f"{number} {unit}"


def quantity(x: float | None, ladder: Ladder) -> str:
    """One value in its own unit: ``quantity(0.139, MASS) == '139 mg'``."""
    if not _ok(x):
        return MISSING
    if x == 0:
        return _join("0", next((u for size, u in ladder if size == 1.0), ladder[-1][1]))
    sc = scale_for([x], ladder)
    return _join(sc.of(x), sc.unit)


def grams(x: float | None) -> str:
    return quantity(x, MASS)


def nbytes(x: float | None) -> str:
    return quantity(x, BYTES)


def joules(x: float | None) -> str:
    return quantity(x, ENERGY)


def kwh(x_kwh: float | None) -> str:
    """Energy given in kWh, written in kWh (the unit a planner pays for), three significant figures."""
    if not _ok(x_kwh):
        return MISSING
    return f"{num(x_kwh)} kWh"


def seconds(x: float | None) -> str:
    return quantity(x, TIME)


def millis(x_ms: float | None) -> str:
    """A latency given in ms: ``millis(20780) == '20.8 s'``, ``millis(88.6) == '88.6 ms'``."""
    return quantity(None if not _ok(x_ms) else x_ms / 1e3, TIME)


def count(n: float | None) -> str:
    """A count with thousands separators: ``983,975``."""
    if not _ok(n):
        return MISSING
    return f"{n:,.0f}" if float(n).is_integer() else num(n)


def share(x: float | None, signed: bool = False) -> str:
    """A fraction as a percentage: ``share(0.284) == '28%'``; two significant figures below 10 %."""
    if not _ok(x):
        return MISSING
    p = x * 100
    d = 0 if abs(p) >= 10 or p == 0 else 1
    s = f"{p:+.{d}f}" if signed else f"{p:.{d}f}"
    return s + "%"


def prob(p: float | None) -> str:
    """A probability with two decimals; the ends say ``<0.01`` / ``>0.99`` rather than 0 or 1 unless exact."""
    if not _ok(p):
        return MISSING
    if 0 < p < 0.005:
        return "<0.01"
    if 0.995 < p < 1:
        return ">0.99"
    return f"{p:.2f}"


# ------------------------------------------------------------------------------------ bands
Band = Mapping[str, Any]


def band_values(b: Band | None) -> list[float | None]:
    if not b:
        return []
    return [b.get("p5"), b.get("p50"), b.get("p95")]


def band_parts(b: Band | None, sc: Scale) -> tuple[str, str]:
    """(P50, "[P5–P95]") in the scale ``sc``, each with three significant figures; ("missing", "") without a P50."""
    if not b or not _ok(b.get("p50")):
        return MISSING, ""
    p5, p50, p95 = band_values(b)
    mid, lo, hi = sc.of(p50), sc.of(p5), sc.of(p95)
    if lo == mid == hi or (lo == MISSING and hi == MISSING):
        return mid, ""
    lo, hi = ("?" if lo == MISSING else lo), ("?" if hi == MISSING else hi)
    sep = "–" if (not _ok(p5) or p5 >= 0) else ", "
    return mid, f"[{lo}{sep}{hi}]"


def band_in(b: Band | None, sc: Scale, unit: bool = True) -> str:
    """``P50 [P5–P95]`` in the scale ``sc``."""
    mid, rng = band_parts(b, sc)
    if mid == MISSING:
        return MISSING
    txt = f"{mid} {rng}" if rng else mid
    return _join(txt, sc.unit) if unit else txt


def band(b: Band | None, ladder: Ladder = MASS) -> str:
    """A band in one unit chosen from its own values: ``139 [116–163] mg``."""
    if not b or not _ok(b.get("p50")):
        return MISSING
    return band_in(b, scale_for(band_values(b), ladder))


def band_share(b: Band | None) -> str:
    if not b or not _ok(b.get("p50")):
        return MISSING
    return f"{share(b['p50'])} [{share(b.get('p5'))}–{share(b.get('p95'))}]"


# ------------------------------------------------------------------------------------ columns
class Column:
    """One unit for a whole column: built from every value the column will show."""

    def __init__(self, values: Iterable[float | None | Band], ladder: Ladder):
        flat: list[float | None] = []
        for v in values:
            if isinstance(v, Mapping):
                flat.extend(band_values(v))
            else:
                flat.append(v)
        self.scale = column_scale(flat, ladder)
        self.ladder = ladder

    @property
    def unit(self) -> str:
        return self.scale.unit

    def head(self, title: str) -> str:
        return f"{title} ({self.unit})" if self.unit else title

    def __call__(self, x: float | None) -> str:
        return self.scale.of(x)

    def head2(self, title: str) -> str:
        """The header on two lines (title, unit): narrower columns."""
        return f"{title}\n{self.unit}" if self.unit else title

    def band(self, b: Band | None, stacked: bool = False) -> str:
        """``P50 [P5–P95]``; stacked: the range on a second line (for narrow terminals)."""
        if not stacked:
            return band_in(b, self.scale, unit=False)
        mid, rng = band_parts(b, self.scale)
        return f"{mid}\n{rng}" if rng else mid
