"""The issue-6 targets: throughput ratios hrseg is to reach (higher is better for hrseg).

Read by the suite's summary (``benchmarks.run``) and drawn as goal lines in ``forward.png``
(``benchmarks.plots``); a module of their own, below both, so the plot can be redrawn from a saved run
without the suite and the suite can draw without the plot script importing it back.
"""

from __future__ import annotations

#: hrseg fast path over the timm reference, per variant (other variants: 1.5)
FAST_OVER_REFERENCE_TARGET = {"w18_small_v2": 1.5, "w18": 1.5, "w48": 1.1}
W48_PEAK_FRACTION_TARGET = 0.85
BEST_OVER_ORT_TARGET = 1.0
TRAIN_OVER_REFERENCE_TARGET = 1.1
DATA_OVER_TRAIN_TARGET = 2.0
