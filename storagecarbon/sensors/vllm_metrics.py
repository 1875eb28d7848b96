"""Token and request counters scraped from a served vLLM's Prometheus endpoint (loopback only).

``vllm serve`` (or ``python -m vllm.entrypoints.openai.api_server``) exposes ``/metrics`` in the
Prometheus text format. Mapped to the ``workload`` pseudo-device (summed over label sets:
engines, models):

* ``vllm:prompt_tokens_total`` -> ``prompt_tokens``
* ``vllm:generation_tokens_total`` -> ``generated_tokens``
* ``vllm:request_success_total`` -> ``requests_done``, counting the finished reasons that served
  the request (``stop``, ``length``, ``repetition``, ...) and not ``abort`` or ``error``.

Optionally, LMCache's usage gauges (``lmcache:local_cache_usage`` = CPU tier bytes,
``lmcache:local_storage_usage`` = disk tier bytes, from the LMCache internal API server's
``/metrics``) map to ``resident_bytes`` of devices named in ``lmcache_resident``. LMCache pushes
them every 10 s, so they are coarse.

Only loopback URLs are scraped (``127.0.0.1``, ``::1``, ``localhost``): the recorder must never
reach outside the machine. Until the first successful scrape (server still loading) a failed
scrape is "no reading yet"; after it, a failure raises so the recorder counts it.
"""

from __future__ import annotations

import math
import re
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlparse

from .base import WORKLOAD_DEVICE, ChannelSpec, Probe, Row, SensorBase

LOOPBACK = {"127.0.0.1", "::1", "localhost"}
TOKEN_METRICS = {
    "vllm:prompt_tokens_total": "prompt_tokens",
    "vllm:generation_tokens_total": "generated_tokens",
}
REQUESTS_METRIC = "vllm:request_success_total"
NOT_SERVED = {"abort", "error"}
LMCACHE_GAUGES = {"cpu": "lmcache:local_cache_usage", "disk": "lmcache:local_storage_usage"}

Labels = tuple[tuple[str, str], ...]
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def _unescape(v: str) -> str:
    return v.replace("\\\\", "\x00").replace('\\"', '"').replace("\\n", "\n").replace("\x00", "\\")


def _parse_value(s: str) -> float:
    s = s.strip()
    if s in ("+Inf", "Inf"):
        return math.inf
    if s == "-Inf":
        return -math.inf
    return float(s)  # also "NaN"


def parse_prometheus(text: str) -> dict[str, list[tuple[Labels, float]]]:
    """Prometheus text exposition -> ``{sample name: [(labels, value), ...]}``.

    Comments (``# HELP``/``# TYPE``) and malformed lines are skipped; label values may hold
    escaped quotes, commas and braces; a trailing timestamp is ignored.
    """
    out: dict[str, list[tuple[Labels, float]]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            if "{" in line and line.index("{") < (line.index(" ") if " " in line else len(line)):
                name = line[:line.index("{")]
                rest = line[line.index("{") + 1:]
                labels: list[tuple[str, str]] = []
                pos = 0
                while True:
                    while pos < len(rest) and rest[pos] in " ,":
                        pos += 1
                    if pos < len(rest) and rest[pos] == "}":
                        pos += 1
                        break
                    m = _LABEL_RE.match(rest, pos)
                    if m is None:
                        raise ValueError("bad labels")
                    labels.append((m.group(1), _unescape(m.group(2))))
                    pos = m.end()
                fields = rest[pos:].split()
            else:
                parts = line.split()
                name, fields, labels = parts[0], parts[1:], []
            if not fields:
                continue
            value = _parse_value(fields[0])
        except (ValueError, IndexError):
            continue
        out.setdefault(name, []).append((tuple(sorted(labels)), value))
    return out


def metric_sum(samples: dict[str, list[tuple[Labels, float]]], name: str,
               exclude: dict[str, set[str]] | None = None) -> float | None:
    """Sum of a sample name over its label sets (``None`` when absent), skipping excluded labels."""
    rows = samples.get(name)
    if rows is None:
        return None
    total = 0.0
    for labels, v in rows:
        if exclude and any(dict(labels).get(k) in vals for k, vals in exclude.items()):
            continue
        total += v
    return total


def workload_rows(samples: dict[str, list[tuple[Labels, float]]], device: str = WORKLOAD_DEVICE) -> list[Row]:
    rows: list[Row] = []
    for pname, metric in TOKEN_METRICS.items():
        v = metric_sum(samples, pname)
        if v is not None:
            rows.append((device, metric, v))
    v = metric_sum(samples, REQUESTS_METRIC, exclude={"finished_reason": NOT_SERVED})
    if v is not None:
        rows.append((device, "requests_done", v))
    return rows


def is_loopback(url: str) -> bool:
    host = urlparse(url).hostname
    return host in LOOPBACK


class VllmMetricsSensor(SensorBase):
    """Scrapes ``url`` (e.g. ``http://127.0.0.1:8000/metrics``) each read.

    ``lmcache_url`` / ``lmcache_resident`` (``{"cpu": "dram", "disk": "ssd0"}``) optionally add the
    LMCache usage gauges as ``resident_bytes`` of those devices.
    """

    name = "vllm_metrics"

    def __init__(self, url: str, *, device: str = WORKLOAD_DEVICE, timeout_s: float = 0.5,
                 lmcache_url: str | None = None, lmcache_resident: dict[str, str] | None = None):
        self.url = url
        self.device = device
        self.timeout_s = timeout_s
        self.lmcache_url = lmcache_url
        self.lmcache_resident = dict(lmcache_resident or {}) if lmcache_url else {}
        self._ok = {url: False, lmcache_url: False}
        self.scrapes = 0

    def probe(self) -> Probe:
        for u in (self.url, self.lmcache_url):
            if u is not None and not is_loopback(u):
                return Probe(False, f"refusing non-loopback metrics URL {u} (only 127.0.0.1/::1/localhost)")
        return Probe(True, f"scraping {self.url}" + (f" and {self.lmcache_url}" if self.lmcache_url else ""))

    def channels(self) -> list[ChannelSpec]:
        out: list[ChannelSpec] = [(self.device, m, self.name) for m in ("prompt_tokens", "generated_tokens", "requests_done")]
        out += [(dev, "resident_bytes", self.name) for dev in self.lmcache_resident.values()]
        return out

    def _fetch(self, url: str) -> dict[str, list[tuple[Labels, float]]] | None:
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as resp:  # noqa: S310 - loopback only
                text = resp.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError):
            if not self._ok[url]:
                return None  # server not up yet: no reading
            raise
        self._ok[url] = True
        return parse_prometheus(text)

    def read(self) -> list[Row]:
        rows: list[Row] = []
        s = self._fetch(self.url)
        if s is not None:
            self.scrapes += 1
            rows += workload_rows(s, self.device)
        if self.lmcache_url and self.lmcache_resident:
            ls = self._fetch(self.lmcache_url)
            if ls is not None:
                for tier, dev in self.lmcache_resident.items():
                    v = metric_sum(ls, LMCACHE_GAUGES[tier])
                    if v is not None:
                        rows.append((dev, "resident_bytes", v))
        return rows

    def summary(self) -> dict[str, Any]:
        return {"url": self.url, "scrapes": self.scrapes}
