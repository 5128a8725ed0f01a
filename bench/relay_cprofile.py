"""Run ``kittiwake`` with cProfile switched on and off by signals (the drain only).

Usage: ``python -m bench.relay_cprofile OUT.prof serve --config FILE`` — SIGUSR1 starts
profiling the main thread (Kittiwake's event loop), SIGUSR2 stops it and writes the stats
to OUT.prof (``python -m pstats OUT.prof``). ``bench/relay.py --cprofile OUT.prof`` does
this around each Kittiwake drain. cProfile sees only the thread that enabled it, so the
SQLite worker threads are not in the profile (``--py-spy`` samples those); it slows the
profiled thread down, so a profiled drain's rate is not a benchmark number.

Not security-sensitive (benchmark tooling).
"""

from __future__ import annotations

import cProfile
import signal
import sys
from types import FrameType


def main() -> None:
    out = sys.argv[1]
    prof = cProfile.Profile()

    def start(_sig: int, _frame: FrameType | None) -> None:
        prof.enable()

    def stop(_sig: int, _frame: FrameType | None) -> None:
        prof.disable()
        prof.dump_stats(out)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    from kittiwake.admin.cli import main as kittiwake

    sys.argv = ["kittiwake", *sys.argv[2:]]
    kittiwake()


if __name__ == "__main__":
    main()
