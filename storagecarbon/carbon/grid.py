"""Grid intensity and PUE: device_db regions, fixed figures, hourly series with forecast error.

Every command resolves a scenario's ``carbon`` section through :func:`grid_spec_for` and
:func:`pue_triple`, and the keyed sampler draws them (one grid quantile per draw).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydantic

from ..errors import ValidationError
from ..yamlio import StrictModel, load_yaml, validate
from .sampling import GridSpec, Triple

QUANTILES = (0.5, 0.9, 0.95, 0.99)
HALF_NORMAL_Z = (0.6745, 1.6449, 1.9600, 2.5758)  # quantiles of |N(0,1)|


@dataclass(frozen=True)
class ErrorBand:
    """Absolute percentage error of a carbon-intensity forecast up to ``max_horizon_h`` hours ahead."""

    max_horizon_h: float
    ape_pct: tuple[float, float, float, float]  # at QUANTILES (P50, P90, P95, P99)


@dataclass(frozen=True)
class ForecastErrorModel:
    """Relative forecast error per horizon; actual = forecast / (1 + e), e = +-|APE| with even sign."""

    name: str
    bands: tuple[ErrorBand, ...]
    source: str

    def sample(self, horizon_h: np.ndarray, u_abs: np.ndarray, u_sign: np.ndarray) -> np.ndarray:
        out = np.zeros(np.shape(horizon_h))
        if not self.bands:
            return out
        edges = np.array([b.max_horizon_h for b in self.bands])
        bi = np.minimum(np.searchsorted(edges, horizon_h, side="left"), len(self.bands) - 1)
        qs = np.array((0.0,) + QUANTILES + (1.0,))
        for i, b in enumerate(self.bands):
            m = bi == i
            if not m.any():
                continue
            p = np.asarray(b.ape_pct, dtype=float)
            tail = p[-1] * max(p[-1] / p[-2], 1.0) if p[-2] > 0 else p[-1]
            vals = np.concatenate([[0.0], p, [tail]]) / 100.0
            out[m] = np.interp(u_abs[m], qs, vals)
        e = np.where(u_sign < 0.5, -out, out)
        return np.maximum(e, -0.9)

    def describe(self) -> list[dict[str, Any]]:
        return [{"max_horizon_h": b.max_horizon_h, **{f"ape_p{int(q * 100)}_pct": v for q, v in zip(QUANTILES, b.ape_pct)}}
                for b in self.bands]


# The named error models live in a data file with their sources (one loader below).
FORECAST_ERRORS = Path(__file__).with_name("forecast_errors.yaml")


class _BandDoc(StrictModel):
    max_horizon_h: int | float = pydantic.Field(gt=0)
    ape_pct: list[float] = pydantic.Field(min_length=4, max_length=4)


class _ModelDoc(StrictModel):
    name: str = pydantic.Field(min_length=1)
    bands: list[_BandDoc]
    source: str = pydantic.Field(min_length=1)


class _ErrorModelsDoc(StrictModel):
    models: list[_ModelDoc] = pydantic.Field(min_length=1)


def load_error_models(path: str | Path = FORECAST_ERRORS) -> dict[str, ForecastErrorModel]:
    """The named forecast-error models of a data file (default: the shipped ``forecast_errors.yaml``)."""
    doc = load_yaml(path)
    parsed = validate(_ErrorModelsDoc, doc)
    out = {}
    for m in parsed.models:
        bands = tuple(ErrorBand(b.max_horizon_h, tuple(b.ape_pct)) for b in m.bands)  # type: ignore[arg-type]
        out[m.name] = ForecastErrorModel(m.name, bands, m.source)
    return out


ERROR_MODELS = load_error_models()
CARBONCAST_CISO = ERROR_MODELS["carboncast-ciso"]
NO_ERROR = ERROR_MODELS["none"]


def error_band_from_mape(max_horizon_h: float, mape_pct: float) -> ErrorBand:
    """A band from a mean absolute percentage error: |e| half-normal with that mean (sigma = MAPE x sqrt(pi/2))."""
    sigma = mape_pct * math.sqrt(math.pi / 2)
    return ErrorBand(max_horizon_h, tuple(sigma * z for z in HALF_NORMAL_Z))  # type: ignore[arg-type]


def error_model_from_mape(name: str, bands: Sequence[tuple[float, float]], source: str) -> ForecastErrorModel:
    """Bands given as (max_horizon_h, MAPE %): |e| half-normal with mean MAPE (sigma = MAPE x sqrt(pi/2))."""
    return ForecastErrorModel(name, tuple(error_band_from_mape(h, mape) for h, mape in bands), source)


@dataclass(frozen=True)
class IntensitySeries:
    """An hourly intensity series (forecast, or history standing in for one) plus its error model."""

    name: str
    values: np.ndarray            # gCO2e/kWh, one per hour
    error: ForecastErrorModel
    lead_h: float = 0.0           # hours between the forecast's issue and the series' first hour
    source: str = ""

    def sample(self, u_hour: np.ndarray, u_abs: np.ndarray, u_sign: np.ndarray) -> np.ndarray:
        n = len(self.values)
        idx = np.minimum((u_hour * n).astype(np.int64), n - 1)
        horizon = self.lead_h + idx + 1.0
        e = self.error.sample(horizon, u_abs, u_sign)
        return self.values[idx] / (1.0 + e)


def load_intensity_csv(path: str | Path) -> np.ndarray:
    """``timestamp,gco2e_per_kwh`` (other columns ignored); errors name FILE:LINE: field."""
    import io

    from .. import limits

    p = Path(path)
    if p.exists() and not p.is_file():
        raise ValidationError(str(p), None, "file", "intensity series is not a regular file")
    try:
        with p.open("rb") as fb:
            raw_bytes = fb.read(int(limits.CSV_BYTES.value) + 1)
    except FileNotFoundError:
        raise ValidationError(str(p), None, "file", "intensity series does not exist") from None
    except OSError as exc:
        raise ValidationError(str(p), None, "file", f"intensity series cannot be read ({exc.__class__.__name__})") from None
    if len(raw_bytes) > limits.CSV_BYTES.value:
        raise ValidationError(str(p), None, "file", f"larger than {limits.CSV_BYTES.value:,.0f} bytes ({limits.CSV_BYTES.why})")
    try:
        text = raw_bytes.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationError(str(p), None, "file", f"not UTF-8 text (byte {exc.start})") from None
    if "\0" in text:
        raise ValidationError(str(p), None, "file", "contains NUL bytes: not a CSV text file")
    rd = csv.DictReader(io.StringIO(text, newline=""))
    vals = []
    try:
        if rd.fieldnames is None or "gco2e_per_kwh" not in rd.fieldnames:
            raise ValidationError(str(p), 1, "header", "needs columns timestamp,gco2e_per_kwh")
        for row in rd:
            i = rd.line_num
            raw = row.get("gco2e_per_kwh")
            try:
                v = float(raw)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise ValidationError(str(p), i, "gco2e_per_kwh", f"not a number ({str(raw)[:40]!r})") from None
            if not (v >= 0 and math.isfinite(v)):
                raise ValidationError(str(p), i, "gco2e_per_kwh", "must be a finite number >= 0")
            vals.append(v)
            if len(vals) > limits.CSV_ROWS.value:
                raise ValidationError(str(p), i, "rows", f"more than {limits.CSV_ROWS.value:,.0f} rows ({limits.CSV_ROWS.why})")
    except csv.Error as exc:
        raise ValidationError(str(p), rd.line_num, "csv", f"not valid CSV ({exc})") from None
    if not vals:
        raise ValidationError(str(p), None, "rows", "intensity series has no rows")
    return np.asarray(vals, dtype=np.float64)



def grid_for_region(db: Any, region: str) -> GridSpec:
    r = db.region(region)
    t = Triple.of(r.gco2e_per_kwh)
    assert t is not None
    return GridSpec(f"region:{region}", Triple(t.low, t.best, t.high, f"{r.name} {r.year}: {t.source}"))


def pue_triple(db: Any, pue: str | float) -> Triple:
    if isinstance(pue, (int, float)):
        return Triple.fixed(float(pue), "given in the scenario")
    p = db.pue_of(pue)
    t = Triple.of(p.value)
    assert t is not None
    return Triple(t.low, t.best, t.high, f"{p.name}: {t.source}")


def grid_spec_for(carbon: Any, db: Any, region: str | None = None, base_dir: Path | None = None) -> GridSpec:
    """A scenario's ``carbon`` section (or an override region) as one :class:`GridSpec`.

    An ``intensity_file`` is an hourly series taken as exact: each draw picks an hour (uniform).
    """
    if region is not None:
        return grid_for_region(db, region)
    if carbon.gco2e_per_kwh is not None:
        g = carbon.gco2e_per_kwh
        t = Triple.of(g)
        assert t is not None
        return GridSpec(f"fixed:{t.low}:{t.best}:{t.high}", t)
    if carbon.intensity_file:
        f = Path(carbon.intensity_file)
        if not f.is_absolute() and base_dir is not None:
            f = base_dir / f
        vals = load_intensity_csv(f)
        return GridSpec(f"series:{f}", series=IntensitySeries(f.name, vals, NO_ERROR, source=str(f)))
    return grid_for_region(db, carbon.region)
