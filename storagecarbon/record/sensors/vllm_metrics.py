"""Requests, tokens and latency histograms scraped from a served vLLM's Prometheus endpoint.

``vllm serve`` exposes ``/metrics`` in the Prometheus text format; it is parsed with
``prometheus_client.parser`` (the reference parser of the format) and mapped to the ``workload``
pseudo-device (summed over label sets: engines, models):

* ``vllm:prompt_tokens_total`` -> ``prompt_tokens``
* ``vllm:generation_tokens_total`` -> ``generated_tokens``
* ``vllm:request_success_total`` -> ``requests_done``, counting the finished reasons that served
  the request (``stop``, ``length``, ``repetition``, ...) and not ``abort`` or ``error``.

Latency comes from vLLM's own histograms (:data:`LATENCY_HISTOGRAMS`): the first and the last
successful scrape are kept and their difference goes to the footer summary (``summary()``), from
which :func:`latency_summary` gives percentiles (Prometheus' ``histogram_quantile`` rule: linear
inside the bucket) and the share of requests within an SLO target. The sensor also notes when the
endpoint first answered (the server is ready: vLLM binds its HTTP port only after the engine is up)
and the first and last scrape at which the request counters moved (the load's start and end, for
loads that do not mark them).

Optionally, LMCache's usage gauges (``lmcache:local_cache_usage`` = CPU tier bytes,
``lmcache:local_storage_usage`` = disk tier bytes, from the LMCache internal API server's
``/metrics``) map to ``resident_bytes`` of devices named in ``lmcache_resident``.

Cost: vLLM's exposition is ~55 kB of text (~600 lines), and the reference parser takes ~8 ms of CPU for all
of it (this project's 2-vCPU VM). So the sensor scrapes every ``every_s`` (2 s; and at once after a live phase
marker, :meth:`refresh`) over one connection kept open (:func:`http_response`: a few system calls, where
``urllib`` costs ~0.9 ms a scrape), finds the three counters' lines in the bytes (:func:`counter_rows`, a scan
in C; the reference parser is the fallback for a line it cannot read), and parses the latency histograms only
when asked for (the first scrape's, and the last one's for the footer).

Only loopback URLs are scraped (``127.0.0.1``, ``::1``, ``localhost``): the recorder must never
reach outside the machine. Until the first successful scrape (server still loading) a failed
scrape is "no reading yet"; after it, a failure raises so the recorder counts it.
"""

from __future__ import annotations

import math
import re
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from prometheus_client.parser import text_string_to_metric_families

from .base import WORKLOAD_DEVICE, ChannelSpec, Every, Probe, Row, SensorBase

LOOPBACK = {"127.0.0.1", "::1", "localhost"}
TOKEN_METRICS = {
    "vllm:prompt_tokens_total": "prompt_tokens",
    "vllm:generation_tokens_total": "generated_tokens",
}
REQUESTS_METRIC = "vllm:request_success_total"
NOT_SERVED = {"abort", "error"}
LMCACHE_GAUGES = {"cpu": "lmcache:local_cache_usage", "disk": "lmcache:local_storage_usage"}
# Latency histograms, first name found wins. TPOT: vLLM >= 0.11 has the per-request mean
# (``request_time_per_output_token``, what ``vllm bench serve`` calls TPOT); older releases had
# ``time_per_output_token`` (per token); ``inter_token_latency`` (per token gap) is the fallback.
LATENCY_HISTOGRAMS = {
    "ttft_ms": ("vllm:time_to_first_token_seconds",),
    "tpot_ms": ("vllm:request_time_per_output_token_seconds", "vllm:time_per_output_token_seconds",
                "vllm:inter_token_latency_seconds"),
}
QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}
COUNTER_LINES = tuple(f"{n}{{" for n in (*TOKEN_METRICS, REQUESTS_METRIC)) + tuple(f"{n} " for n in (*TOKEN_METRICS, REQUESTS_METRIC))
"""Sample lines of the counters read at every scrape (exact names, with or without labels)."""
HISTOGRAM_FAMILIES = tuple(n for names in LATENCY_HISTOGRAMS.values() for n in names)
LMCACHE_FAMILIES = tuple(LMCACHE_GAUGES.values())

Labels = tuple[tuple[str, str], ...]
Samples = dict[str, list[tuple[Labels, float]]]


def parse_prometheus(text: str) -> Samples:
    """Prometheus text exposition -> ``{sample name: [(labels, value), ...]}``.

    Uses ``prometheus_client.parser``; a malformed exposition raises ``ValueError``.
    """
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((tuple(sorted(s.labels.items())), float(s.value)))
    return out


def keep_families(text: str, prefixes: tuple[str, ...]) -> str:
    """The lines of a Prometheus text exposition whose sample (or ``# HELP`` / ``# TYPE``) name starts with one of
    ``prefixes``: what the reference parser then needs to read, a tenth of vLLM's exposition."""
    out = []
    for line in text.split("\n"):
        if line.startswith("#"):
            if line[7:].startswith(prefixes) and line.startswith(("# TYPE ", "# HELP ")):
                out.append(line)
        elif line.startswith(prefixes):
            out.append(line)
    return "\n".join(out) + "\n"


_LABELS_VALUE = re.compile(rb'(\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})?[ \t]+(\S+)')
_REASON = re.compile(rb'finished_reason="([^"]*)"')


def counter_rows(body: bytes, device: str = WORKLOAD_DEVICE) -> list[Row]:
    """:func:`workload_rows` straight from the exposition's bytes: the lines of the three counters are found with
    ``bytes.find`` (a scan in C) and only they are parsed, instead of the whole ~50 kB text. Answers the same
    rows as ``workload_rows(parse_prometheus(text))`` (tested on a real vLLM exposition); a line it cannot read
    raises ``ValueError``, and the caller then uses the reference parser."""
    rows: list[Row] = []
    names = (*TOKEN_METRICS, REQUESTS_METRIC)
    for name in names:
        nb = name.encode()
        key = b"\n" + nb
        total, found = 0.0, False
        starts = [0] if body.startswith(nb) else []
        pos = body.find(key)
        while pos >= 0:
            starts.append(pos + 1)
            pos = body.find(key, pos + 1)
        for a in starts:
            end = body.find(b"\n", a)
            line = body[a + len(nb): end if end >= 0 else len(body)]
            if line[:1] not in (b"{", b" ", b"\t"):
                continue   # a longer name that starts with this one
            m = _LABELS_VALUE.match(line)
            if m is None:
                raise ValueError(f"unreadable sample line of {name}")
            found = True
            if name == REQUESTS_METRIC and m.group(1):
                r = _REASON.search(m.group(1))
                if r is not None and r.group(1).decode() in NOT_SERVED:
                    continue
            total += float(m.group(2))
        if found:
            rows.append((device, TOKEN_METRICS.get(name, "requests_done"), total))
    return rows


def metric_sum(samples: Samples, name: str, exclude: dict[str, set[str]] | None = None) -> float | None:
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


def workload_rows(samples: Samples, device: str = WORKLOAD_DEVICE) -> list[Row]:
    rows: list[Row] = []
    for pname, metric in TOKEN_METRICS.items():
        v = metric_sum(samples, pname)
        if v is not None:
            rows.append((device, metric, v))
    v = metric_sum(samples, REQUESTS_METRIC, exclude={"finished_reason": NOT_SERVED})
    if v is not None:
        rows.append((device, "requests_done", v))
    return rows


@dataclass(frozen=True)
class Histogram:
    """A cumulative Prometheus histogram summed over its label sets (``le`` apart)."""

    name: str
    buckets: tuple[tuple[float, float], ...]   # (upper bound, cumulative count), ascending, +Inf last
    count: float
    sum: float

    @classmethod
    def from_samples(cls, samples: Samples, name: str) -> "Histogram | None":
        rows = samples.get(f"{name}_bucket")
        if not rows:
            return None
        acc: dict[float, float] = {}
        for labels, v in rows:
            le = dict(labels).get("le")
            if le is None:
                continue
            b = float(le)  # "+Inf" parses to inf
            acc[b] = acc.get(b, 0.0) + v
        count = metric_sum(samples, f"{name}_count")
        total = metric_sum(samples, f"{name}_sum")
        buckets = tuple(sorted(acc.items()))
        if not buckets:
            return None
        return cls(name, buckets, count if count is not None else buckets[-1][1], total or 0.0)

    def minus(self, earlier: "Histogram | None") -> "Histogram":
        """Observations made after ``earlier`` (same buckets; a counter reset keeps ``self``)."""
        if earlier is None or earlier.count > self.count:
            return self
        prev = dict(earlier.buckets)
        return Histogram(self.name, tuple((le, c - prev.get(le, 0.0)) for le, c in self.buckets),
                         self.count - earlier.count, self.sum - earlier.sum)

    def quantile(self, q: float) -> float | None:
        """Prometheus ``histogram_quantile``: linear inside the bucket holding rank ``q·count``;
        a rank in the +Inf bucket answers the highest finite bound. ``None`` without observations."""
        if self.count <= 0 or not self.buckets:
            return None
        rank = q * self.buckets[-1][1]
        lo_bound, lo_count = 0.0, 0.0
        for le, c in self.buckets:
            if c >= rank:
                if math.isinf(le):
                    return lo_bound
                if c == lo_count:
                    return le
                return lo_bound + (le - lo_bound) * (rank - lo_count) / (c - lo_count)
            lo_bound, lo_count = le, c
        return lo_bound

    def share_within(self, x: float) -> float | None:
        """Share of observations <= ``x`` (linear inside the bucket holding ``x``)."""
        if self.count <= 0 or not self.buckets:
            return None
        total = self.buckets[-1][1]
        lo_bound, lo_count = 0.0, 0.0
        for le, c in self.buckets:
            if x <= le:
                if math.isinf(le):
                    return lo_count / total  # beyond the last finite bound: only what is known below
                return (lo_count + (c - lo_count) * (x - lo_bound) / (le - lo_bound)) / total if le > lo_bound \
                    else c / total
            lo_bound, lo_count = le, c
        return 1.0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "count": self.count, "sum": self.sum,
                "buckets": [["+Inf" if math.isinf(le) else le, c] for le, c in self.buckets]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Histogram":
        return cls(d["name"], tuple((float(le), float(c)) for le, c in d["buckets"]), float(d["count"]),
                   float(d["sum"]))


def latency_histograms(samples: Samples) -> dict[str, Histogram]:
    out = {}
    for key, names in LATENCY_HISTOGRAMS.items():
        for n in names:
            h = Histogram.from_samples(samples, n)
            if h is not None:
                out[key] = h
                break
    return out


def latency_summary(hists: dict[str, Histogram], slo: dict[str, float | None] | None = None) -> dict[str, Any]:
    """``{"ttft_ms": {"mean", "p50", "p90", "p99", "count", "metric", "method"}|None, "tpot_ms": ...,
    "slo": {key: {"target", "share_within"}}}`` in milliseconds, from histograms of seconds."""
    out: dict[str, Any] = {}
    slo_out: dict[str, Any] = {}
    for key in LATENCY_HISTOGRAMS:
        h = hists.get(key)
        if h is None or h.count <= 0:
            out[key] = None
            continue
        st: dict[str, Any] = {"mean": h.sum / h.count * 1e3, "count": h.count, "metric": h.name,
                              "method": "vLLM histogram, linear inside buckets (Prometheus histogram_quantile)"}
        for name, q in QUANTILES.items():
            v = h.quantile(q)
            st[name] = None if v is None else v * 1e3
        out[key] = st
        target = (slo or {}).get(key)
        if target is not None:
            slo_out[key] = {"target": target, "share_within": h.share_within(target / 1e3)}
    out["slo"] = slo_out
    return out


def http_response(sock: socket.socket) -> tuple[bytes, bool]:
    """Read one HTTP/1.1 response from ``sock``: ``(body, keep_alive)``. Content-Length and chunked bodies; a
    body without either ends at EOF. A status other than 200 raises ``OSError``; a malformed response raises
    ``ValueError``."""
    buf = b""
    while True:
        i = buf.find(b"\r\n\r\n")
        if i >= 0:
            break
        c = sock.recv(65536)
        if not c:
            raise OSError("connection closed before the response")
        buf += c
    head, rest = buf[:i].split(b"\r\n"), buf[i + 4:]
    status = head[0].split(None, 2)
    if len(status) < 2 or not status[0].startswith(b"HTTP/"):
        raise ValueError(f"not an HTTP response: {head[0][:80]!r}")
    hdr = {}
    for ln in head[1:]:
        k, _, v = ln.partition(b":")
        hdr[k.strip().lower()] = v.strip()
    keep = hdr.get(b"connection", b"").lower() != b"close" and status[0] != b"HTTP/1.0"
    if b"chunked" in hdr.get(b"transfer-encoding", b"").lower():
        parts, data = [], rest
        while True:
            while b"\r\n" not in data:
                c = sock.recv(65536)
                if not c:
                    raise ValueError("chunked body cut short")
                data += c
            size_line, _, data = data.partition(b"\r\n")
            n = int(size_line.split(b";")[0], 16)
            while len(data) < n + 2:
                c = sock.recv(max(65536, n + 2 - len(data)))
                if not c:
                    raise ValueError("chunked body cut short")
                data += c
            if n == 0:
                break
            parts.append(data[:n])
            data = data[n + 2:]
        body = b"".join(parts)
    elif b"content-length" in hdr:
        n = int(hdr[b"content-length"])
        chunks, have = [rest], len(rest)
        while have < n:
            c = sock.recv(max(65536, n - have))
            if not c:
                raise ValueError("body cut short")
            chunks.append(c)
            have += len(c)
        body = b"".join(chunks)[:n]
    else:
        chunks = [rest]
        while True:
            c = sock.recv(65536)
            if not c:
                break
            chunks.append(c)
        body, keep = b"".join(chunks), False
    if status[1] != b"200":
        raise OSError(f"HTTP {status[1].decode('ascii', 'replace')}")
    return body, keep


def is_loopback(url: str) -> bool:
    host = urlparse(url).hostname
    return host in LOOPBACK


class VllmMetricsSensor(SensorBase):
    """Scrapes ``url`` (e.g. ``http://127.0.0.1:8000/metrics``) every ``every_s`` (and after :meth:`refresh`).

    ``lmcache_url`` / ``lmcache_resident`` (``{"cpu": "dram", "disk": "ssd0"}``) optionally add the
    LMCache usage gauges as ``resident_bytes`` of those devices. ``counts_from_zero``: the server was
    started by the recorded command, so its counters and histograms count from 0 and the first
    successful scrape (which may come late, mid-load, on a busy machine) is preceded by a 0 reading.
    """

    name = "vllm_metrics"

    def __init__(self, url: str, *, device: str = WORKLOAD_DEVICE, timeout_s: float = 0.5,
                 lmcache_url: str | None = None, lmcache_resident: dict[str, str] | None = None,
                 counts_from_zero: bool = False, every_s: float = 2.0):
        self.url = url
        self.counts_from_zero = counts_from_zero
        self.device = device
        self.timeout_s = timeout_s
        self.lmcache_url = lmcache_url
        self.lmcache_resident = dict(lmcache_resident or {}) if lmcache_url else {}
        self._ok = {url: False, lmcache_url: False}
        self._conns: dict[str, socket.socket] = {}   # kept open between scrapes (HTTP/1.1 keep-alive)
        self._req: dict[str, bytes] = {}
        self.scrapes = 0
        self.first_ok_unix: float | None = None
        self.first_activity_unix: float | None = None   # last scrape before the counters first moved
        self.last_activity_unix: float | None = None    # first scrape after they last moved
        self._prev_t: float | None = None
        self._prev_counts: tuple[float | None, ...] | None = None
        self._hist_first: dict[str, Histogram] = {}
        self._req_first: float | None = None   # requests done at the first scrape (0 when counting from zero)
        self._req_last: float | None = None
        self._hist_last: dict[str, Histogram] = {}
        self._last_body: bytes | None = None  # the last scrape, as received: its histograms are parsed when asked for
        self.every_s = every_s
        self._due = Every(every_s)

    def probe(self) -> Probe:
        for u in (self.url, self.lmcache_url):
            if u is not None and not is_loopback(u):
                return Probe(False, f"refusing non-loopback metrics URL {u} (only 127.0.0.1/::1/localhost)")
        return Probe(True, f"scraping {self.url}" + (f" and {self.lmcache_url}" if self.lmcache_url else ""))

    def channels(self) -> list[ChannelSpec]:
        out: list[ChannelSpec] = [(self.device, m, self.name) for m in ("prompt_tokens", "generated_tokens", "requests_done")]
        out += [(dev, "resident_bytes", self.name) for dev in self.lmcache_resident.values()]
        return out

    def _get(self, url: str) -> bytes:
        """One ``GET`` on a connection kept open between scrapes (HTTP/1.1 keep-alive): a new connection costs a
        connect and the server's per-connection set-up every second, and ``http.client`` parses headers with
        the e-mail parser. A connection the server closed is opened again once."""
        for attempt in (0, 1):
            sock = self._conns.get(url)
            try:
                if sock is None:
                    u = urlparse(url)
                    sock = self._conns[url] = socket.create_connection((u.hostname or "127.0.0.1", u.port or 80),
                                                                       timeout=self.timeout_s)
                    self._req[url] = (f"GET {(u.path or '/') + (f'?{u.query}' if u.query else '')} HTTP/1.1\r\n"
                                      f"Host: {u.netloc}\r\nAccept: text/plain\r\n\r\n").encode()
                sock.sendall(self._req[url])
                body, keep = http_response(sock)
            except (OSError, ValueError):
                self._drop(url)
                if attempt or not self._ok[url]:
                    raise
                continue   # the server closed an idle connection: once more on a new one
            if not keep:
                self._drop(url)
            return body
        raise AssertionError("unreachable")

    def _drop(self, url: str) -> None:
        sock = self._conns.pop(url, None)
        if sock is not None:
            sock.close()

    def _fetch(self, url: str) -> bytes | None:
        try:
            body = self._get(url)
        except (OSError, ValueError):
            if not self._ok[url]:
                return None  # server not up yet: no reading
            raise
        self._ok[url] = True
        return body

    def close(self) -> None:
        for url in list(self._conns):
            self._drop(url)

    def _track(self, w: list[Row], t: float) -> None:
        if self.first_ok_unix is None:
            self.first_ok_unix = t
        got = {m: v for _d, m, v in w}
        counts = (got.get("prompt_tokens"), got.get("generated_tokens"), got.get("requests_done"))
        if counts[2] is not None:
            if self._req_first is None:
                self._req_first = 0.0 if self.counts_from_zero else counts[2]
            self._req_last = counts[2]
        if self._prev_counts is not None and counts != self._prev_counts:
            if self.first_activity_unix is None:
                self.first_activity_unix = self._prev_t
            self.last_activity_unix = t
        self._prev_counts, self._prev_t = counts, t
        if self.scrapes == 1 and not self.counts_from_zero:
            self._hist_first = self._parse_histograms()

    def _parse_histograms(self) -> dict[str, Histogram]:
        if self._last_body is None:
            return {}
        text = self._last_body.decode("utf-8", "replace")
        return latency_histograms(parse_prometheus(keep_families(text, HISTOGRAM_FAMILIES)))

    @property
    def next_read_s(self) -> float:
        """The next scrape (recorder protocol, see base)."""
        return self._due.next_s

    def refresh(self) -> None:
        """The next :meth:`read` scrapes (the recorder's first and final samples, live phase markers)."""
        self._due.refresh()

    def read(self) -> list[Row]:
        rows: list[Row] = []
        if not self._due.due(time.monotonic()):
            return rows
        t = time.time()
        body = self._fetch(self.url)
        if body is not None:
            self.scrapes += 1
            self._last_body, self._hist_last = body, {}
            try:
                w = counter_rows(body, self.device)   # three counters found in the bytes, not the whole text parsed
            except ValueError:   # a line the fast path cannot read: the reference parser decides
                text = body.decode("utf-8", "replace")
                w = workload_rows(parse_prometheus(keep_families(text, COUNTER_LINES)), self.device)
            if self.scrapes == 1 and self.counts_from_zero:
                rows += [(d, m, 0.0) for d, m, _ in w]
            rows += w
            self._track(w, t)
        if self.lmcache_url and self.lmcache_resident:
            lb = self._fetch(self.lmcache_url)
            if lb is not None:
                ls = parse_prometheus(keep_families(lb.decode("utf-8", "replace"), LMCACHE_FAMILIES))
                for tier, dev in self.lmcache_resident.items():
                    v = metric_sum(ls, LMCACHE_GAUGES[tier])
                    if v is not None:
                        rows.append((dev, "resident_bytes", v))
        return rows

    def histograms(self) -> dict[str, Histogram]:
        """Observations between the first and the last successful scrape."""
        if not self._hist_last and self._last_body is not None:
            self._hist_last = self._parse_histograms()
        return {k: h.minus(self._hist_first.get(k)) for k, h in self._hist_last.items()}

    def summary(self) -> dict[str, Any]:
        done = None if self._req_last is None or self._req_first is None else self._req_last - self._req_first
        return {"url": self.url, "scrapes": self.scrapes, "every_s": self.every_s,
                "counts_from_zero": self.counts_from_zero,
                "requests_done": done,
                "first_ok_unix": self.first_ok_unix,
                "first_activity_unix": self.first_activity_unix, "last_activity_unix": self.last_activity_unix,
                "histograms": {k: h.to_json() for k, h in self.histograms().items()}}
