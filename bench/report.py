"""Summarising benchmark runs: medians per (workload, server), ratios, targets, the table.

Owns: turning a list of RunResult into the printed table, the Kittiwake/Postfix and
Kittiwake/aiosmtpd ratios, the PASS/FAIL verdicts against the project's targets, and the JSON
document. Pure functions over data; not security-sensitive.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.measure import MiB
from bench.workloads import RunResult

SUBJECT = "kittiwake"
OTHERS = ("postfix", "aiosmtpd")


@dataclass
class Summary:
    workload: str
    server: str
    runs: int
    expected: int
    rate: float  # median messages/s accepted
    e2e_rate: float  # median messages/s until all were in the Maildir
    seconds: float  # median load time (D: time to the final 250)
    rss_peak: int  # median, bytes
    rss_growth: int  # median, bytes
    procs: int  # median of the most processes the server's tree had at once
    pss_growth: int  # E only: median PSS while connections are held minus PSS before
    delivered: int  # worst run (E: greeted connections)
    missing: int  # worst run
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and self.missing == 0


def _median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else 0.0


def summarise(runs: Sequence[RunResult]) -> dict[tuple[str, str], Summary]:
    groups: dict[tuple[str, str], list[RunResult]] = {}
    for r in runs:
        groups.setdefault((r.workload, r.server), []).append(r)
    out = {}
    for key, rs in groups.items():
        good = [r for r in rs if not r.errors] or rs
        out[key] = Summary(
            workload=key[0],
            server=key[1],
            runs=len(rs),
            expected=rs[0].expected,
            rate=_median([r.rate for r in good]),
            e2e_rate=_median(
                [r.expected / r.delivered_seconds for r in good if r.delivered_seconds > 0]
            ),
            seconds=_median([r.seconds for r in good]),
            rss_peak=int(_median([r.rss_peak for r in good])),
            rss_growth=int(_median([r.rss_growth for r in good])),
            procs=int(_median([r.extra.get("procs_peak", 0) for r in good])),
            pss_growth=int(
                _median([r.extra.get("pss_held", 0) - r.extra.get("pss_before", 0) for r in good])
            ),
            delivered=min(r.delivered for r in rs),
            missing=max(r.missing for r in rs),
            errors=sorted({e for r in rs for e in r.errors}),
            notes=sorted({str(r.extra["note"]) for r in rs if "note" in r.extra}),
        )
    return out


def _ratio(a: float, b: float) -> float | None:
    return a / b if a > 0 and b > 0 else None


def ratios(s: dict[tuple[str, str], Summary], workload: str) -> dict[str, float | None]:
    """Kittiwake/other: throughput ratio for A-C, time ratio for D, memory ratio for D-E."""
    me = s.get((workload, SUBJECT))
    out: dict[str, float | None] = {}
    for other in OTHERS:
        o = s.get((workload, other))
        if me is None or o is None or not me.ok or not o.ok:
            continue
        if workload == "D":
            out[f"time {SUBJECT}/{other}"] = _ratio(me.seconds, o.seconds)
            out[f"memory growth {SUBJECT}/{other}"] = _ratio(me.rss_growth, o.rss_growth)
        elif workload == "E":
            if me.delivered == o.delivered:  # else they held different numbers of connections
                out[f"memory growth {SUBJECT}/{other}"] = _ratio(me.rss_growth, o.rss_growth)
        else:
            out[f"rate {SUBJECT}/{other}"] = _ratio(me.rate, o.rate)
    return out


@dataclass(frozen=True)
class TargetCheck:
    workload: str
    text: str
    check: Callable[[dict[tuple[str, str], Summary]], bool | None]  # None: cannot judge


def _rate_vs(workload: str, other: str, factor: float) -> TargetCheck:
    def check(s: dict[tuple[str, str], Summary]) -> bool | None:
        me, o = s.get((workload, SUBJECT)), s.get((workload, other))
        if me is None or o is None or not o.ok or o.rate <= 0:
            return None
        return me.ok and me.rate >= factor * o.rate

    return TargetCheck(workload, f"rate >= {factor}x {other}", check)


def _d_time(s: dict[tuple[str, str], Summary]) -> bool | None:
    me, pf = s.get(("D", SUBJECT)), s.get(("D", "postfix"))
    if me is None or pf is None or not pf.ok:
        return None
    return me.ok and me.seconds <= pf.seconds


def _growth_below(workload: str, limit_mib: int) -> TargetCheck:
    def check(s: dict[tuple[str, str], Summary]) -> bool | None:
        me = s.get((workload, SUBJECT))
        if me is None:
            return None
        held = me.delivered == me.expected  # E: every connection greeted
        return me.ok and held and me.rss_growth < limit_mib * MiB

    what = "all greeted and RSS growth" if workload == "E" else "RSS growth"
    return TargetCheck(workload, f"{what} < {limit_mib} MiB", check)


TARGETS = (
    _rate_vs("A", "postfix", 2.0),
    _rate_vs("A", "aiosmtpd", 1.2),
    _rate_vs("B", "postfix", 1.5),
    TargetCheck("D", "time to final 250 <= postfix", _d_time),
    _growth_below("D", 30),
    _growth_below("E", 150),
)


def verdicts(s: dict[tuple[str, str], Summary]) -> list[tuple[TargetCheck, str]]:
    out = []
    for t in TARGETS:
        v = t.check(s)
        out.append((t, "n/a" if v is None else "PASS" if v else "FAIL"))
    return out


def _rate(x: Summary, r: float) -> str:
    return f"{r:>9.0f}" if x.expected > 1 and r > 0 else f"{'-':>9}"  # D, E: not about rates


def _mib(b: int) -> str:
    return f"{b / MiB:.1f}"


def table(s: dict[tuple[str, str], Summary], descriptions: dict[str, str]) -> str:
    head = (
        f"{'':3}{'server':<10}{'runs':>5}{'count':>7}{'msg/s':>9}{'e2e/s':>9}{'time s':>9}"
        f"{'peak MiB':>10}{'growth MiB':>11}{'procs':>6}{'missing':>8}"
    )
    lines = []
    for wl in sorted({k[0] for k in s}):
        lines += ["", f"{wl}  {descriptions.get(wl, '')}", head]
        for server in (SUBJECT, *OTHERS):
            x = s.get((wl, server))
            if x is None:
                continue
            rates = _rate(x, x.rate) + _rate(x, x.e2e_rate)
            lines.append(
                f"{'':3}{server:<10}{x.runs:>5}{x.delivered:>7}{rates}"
                f"{x.seconds:>9.2f}{_mib(x.rss_peak):>10}{_mib(x.rss_growth):>11}{x.procs:>6}"
                f"{x.missing:>8}"
                + (f"  (PSS growth {_mib(x.pss_growth)} MiB)" if wl == "E" else "")
            )
            lines += [f"{'':6}! {e}" for e in x.errors[:5]]
            lines += [f"{'':6}- {n}" for n in x.notes]
        for name, v in ratios(s, wl).items():
            lines.append(f"{'':3}{name}: " + ("-" if v is None else f"{v:.3g}x"))
        for t, verdict in verdicts(s):
            if t.workload == wl:
                lines.append(f"{'':3}target {SUBJECT} {t.text}: {verdict}")
    return "\n".join(lines)


def document(
    runs: Sequence[RunResult],
    s: dict[tuple[str, str], Summary],
    settings: dict[str, Any],
) -> dict[str, Any]:
    """Everything, for --json."""
    return {
        "settings": settings,
        "runs": [r.as_dict() for r in runs],
        "summary": [
            {**vars(x), "ok": x.ok}
            for x in sorted(s.values(), key=lambda x: (x.workload, x.server))
        ],
        "ratios": {wl: ratios(s, wl) for wl in sorted({k[0] for k in s})},
        "targets": [
            {"workload": t.workload, "target": t.text, "verdict": v} for t, v in verdicts(s)
        ],
    }
