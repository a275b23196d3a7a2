"""The few PromQL forms the wsgate dashboard uses, evaluated over a series
of /metrics scrapes kept in memory: enough to draw the dashboard's panels
from a real gateway where no Prometheus or Grafana runs.

    sel       := name{label="v", label=~"re", label!="v"}
    inner     := sel | rate(sel[1m])
    agg       := (sum|max|count) [by (l1, l2)] (inner)
    expr      := agg | histogram_quantile(q, agg)

`$job` in a matcher matches everything (the scrapes carry no job label).
"""

import math
import re

LINE = re.compile(r'^([a-zA-Z_:][\w:]*)(\{(.*)\})?\s+(\S+)')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


def parse_scrape(text):
    """Prometheus/OpenMetrics text → {(name, ((label, value), ...)): float}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = LINE.match(line)
        if not m:
            continue
        labels = tuple(sorted(LABEL.findall(m.group(3) or "")))
        try:
            out[(m.group(1), labels)] = float(m.group(4))
        except ValueError:
            pass
    return out


class Scrapes:
    def __init__(self):
        self.times = []
        self.samples = []

    def add(self, t, text):
        self.times.append(t)
        self.samples.append(parse_scrape(text))


def _matchers(body):
    out = []
    for label, op, value in MATCHER.findall(body or ""):
        value = value.replace("$job", ".*")
        out.append((label, op, value))
    return out


def _matches(labels, matchers):
    d = dict(labels)
    for label, op, value in matchers:
        v = d.get(label, "")
        if op == "=" and v != value:
            return False
        if op == "!=" and v == value:
            return False
        if op == "=~" and not re.fullmatch(value, v):
            return False
        if op == "!~" and re.fullmatch(value, v):
            return False
    return True


def _select(scrapes, i, name, matchers):
    return {labels: v for (n, labels), v in scrapes.samples[i].items()
            if n == name and _matches(labels, matchers)}


def _rate(scrapes, i, name, matchers, window):
    t = scrapes.times[i]
    j = i
    while j > 0 and scrapes.times[j - 1] >= t - window:
        j -= 1
    if j == i:
        return {}
    now, then = _select(scrapes, i, name, matchers), _select(scrapes, j, name, matchers)
    dt = t - scrapes.times[j]
    out = {}
    for labels, v in now.items():
        before = then.get(labels, 0.0)
        out[labels] = (v - before if v >= before else v) / dt
    return out


SEL = r'([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})?'
INNER = re.compile(rf'^\s*(?:rate\(\s*{SEL}\[(\d+)([smh])\]\s*\)|{SEL})\s*$')
AGG = re.compile(r'^\s*(sum|max|count)\s*(?:by\s*\(([^)]*)\))?\s*\((.*)\)\s*$')
HQ = re.compile(r'^\s*histogram_quantile\(\s*([0-9.]+)\s*,(.*)\)\s*$')
UNIT = {"s": 1, "m": 60, "h": 3600}


def _inner(scrapes, i, text):
    m = INNER.match(text)
    if not m:
        raise ValueError(f"unsupported: {text}")
    if m.group(1):
        return _rate(scrapes, i, m.group(1), _matchers(m.group(2)),
                     int(m.group(3)) * UNIT[m.group(4)])
    return _select(scrapes, i, m.group(5), _matchers(m.group(6)))


def _agg(scrapes, i, text):
    m = AGG.match(text)
    if not m:
        raise ValueError(f"unsupported: {text}")
    op, by, inner = m.group(1), m.group(2), m.group(3)
    keys = [k.strip() for k in (by or "").split(",") if k.strip()]
    groups = {}
    for labels, v in _inner(scrapes, i, inner).items():
        d = dict(labels)
        key = tuple((k, d.get(k, "")) for k in keys)
        groups.setdefault(key, []).append(v)
    fn = {"sum": sum, "max": max, "count": len}[op]
    return {k: float(fn(vs)) for k, vs in groups.items()}


def _quantile(q, buckets):
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    rank = q * buckets[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return prev_le


def evaluate(scrapes, i, expr):
    """{label tuple: value} of `expr` at scrape `i`."""
    m = HQ.match(expr)
    if not m:
        return _agg(scrapes, i, expr)
    q = float(m.group(1))
    series = {}
    for labels, v in _agg(scrapes, i, m.group(2)).items():
        d = dict(labels)
        le = float(d.pop("le", "+Inf").replace("+Inf", "inf"))
        series.setdefault(tuple(sorted(d.items())), []).append((le, v))
    return {k: _quantile(q, b) for k, b in series.items()}


def legend(fmt, labels):
    d = dict(labels)
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: d.get(m.group(1), ""), fmt).strip() or "value"
