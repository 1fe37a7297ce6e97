"""Online anomaly detection on one series (a message rate, a latency), pure and O(window).

A point is anomalous only when two detectors agree (Netdata-style consensus), because
each one alone has a known failure mode:

* basic: EWMA mean and EW variance (Finch 2009 recurrence), z = (x - mean) / sd. Cheap
  and adaptive, but one outlier inflates sd and level shifts get absorbed.
* robust: rolling median and MAD over the last ``window`` points, robust_z =
  (x - median) / (1.4826 * MAD). Resists outliers, but MAD is 0 on idle or quantised
  series.

Both scales have a floor so a flat series with tiny noise does not fire on a trivial
change: a deviation must exceed ``min_band`` (absolute, in the series' units) to count
for either detector. Formally, with scale_e = max(sd, min_band / z_threshold) and
scale_r = max(1.4826 * MAD, min_band / mad_threshold), a point is anomalous when
``|x - mean| / scale_e > z_threshold`` and ``|x - median| / scale_r > mad_threshold``.

No verdict is given before ``warmup`` points. Anomalous points do not update the EWMA
(the baseline is frozen while anomalous) but do enter the robust window, so after a real
level shift the median catches up within about window/2 points, the robust detector stops
agreeing, and the EWMA then learns the new level.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque
from dataclasses import dataclass

__all__ = ["AnomalyDetector", "AnomalyStats", "AnomalyVerdict"]

MAD_TO_SIGMA = 1.4826  # normal-consistency constant, as R's mad()
_TINY = 1e-12  # last-resort scale so a flat series with min_band=0 gives a finite z


@dataclass(frozen=True)
class AnomalyVerdict:
    anomalous: bool
    z: float  # EWMA z-score with the floored scale; 0.0 while warming up
    robust_z: float  # median/MAD score with the floored scale; 0.0 while warming up
    expected: float  # the robust baseline (rolling median), or the value itself at first
    band: float  # half-width of the robust band: max(mad_threshold * 1.4826 * MAD, min_band)
    warming_up: bool


@dataclass(frozen=True)
class AnomalyStats:
    samples: int
    anomalies: int
    mean: float | None
    sd: float | None
    median: float | None
    mad: float | None


class AnomalyDetector:
    """Online two-detector anomaly flagging for one series; see the module docstring.

    ``alpha`` is the EWMA weight of a new point; alternatively ``half_life`` in points
    (alpha = 1 - 2 ** (-1 / half_life)). The default is a half-life of 30 points.
    """

    def __init__(
        self,
        *,
        alpha: float | None = None,
        half_life: float | None = None,
        z_threshold: float = 4.0,
        mad_threshold: float = 4.0,
        window: int = 120,
        warmup: int = 30,
        min_band: float,
    ) -> None:
        if alpha is not None and half_life is not None:
            raise ValueError("give alpha or half_life, not both")
        if alpha is None:
            hl = 30.0 if half_life is None else half_life
            if not hl > 0:
                raise ValueError(f"half_life must be > 0, got {hl}")
            alpha = 1.0 - 2.0 ** (-1.0 / hl)
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if window < 3 or warmup < 1:
            raise ValueError(f"need window >= 3 and warmup >= 1, got {window}, {warmup}")
        if not (z_threshold > 0 and mad_threshold > 0 and min_band >= 0):
            raise ValueError("thresholds must be > 0 and min_band >= 0")
        self.alpha = alpha
        self.z_threshold = z_threshold
        self.mad_threshold = mad_threshold
        self.window = window
        self.warmup = warmup
        self.min_band = min_band
        self._mean: float | None = None
        self._var = 0.0
        self._recent: deque[float] = deque()
        self._sorted: list[float] = []
        self._samples = 0
        self._anomalies = 0

    def _median(self) -> float:
        s = self._sorted
        n = len(s)
        mid = n // 2
        return s[mid] if n % 2 else 0.5 * (s[mid - 1] + s[mid])

    def _mad(self, median: float) -> float:
        devs = sorted([abs(v - median) for v in self._sorted])
        n = len(devs)
        mid = n // 2
        return devs[mid] if n % 2 else 0.5 * (devs[mid - 1] + devs[mid])

    def update(self, value: float) -> AnomalyVerdict:
        """Judge ``value`` against the history so far, then learn from it."""
        if not math.isfinite(value):
            raise ValueError(f"AnomalyDetector.update needs a finite value, got {value!r}")
        if self._samples < self.warmup or self._mean is None:
            verdict = AnomalyVerdict(False, 0.0, 0.0, value, self.min_band, True)
            self._learn(value, update_ewma=True)
            return verdict

        sd = math.sqrt(self._var)
        scale_e = max(sd, self.min_band / self.z_threshold, _TINY)
        z = (value - self._mean) / scale_e
        median = self._median()
        sigma_r = MAD_TO_SIGMA * self._mad(median)
        scale_r = max(sigma_r, self.min_band / self.mad_threshold, _TINY)
        robust_z = (value - median) / scale_r
        anomalous = abs(z) > self.z_threshold and abs(robust_z) > self.mad_threshold
        if anomalous:
            self._anomalies += 1
        band = max(self.mad_threshold * sigma_r, self.min_band)
        self._learn(value, update_ewma=not anomalous)
        return AnomalyVerdict(anomalous, z, robust_z, median, band, False)

    def _learn(self, value: float, *, update_ewma: bool) -> None:
        self._samples += 1
        if update_ewma:
            if self._mean is None:
                self._mean = value
            else:
                d = value - self._mean
                incr = self.alpha * d
                self._mean += incr
                self._var = (1.0 - self.alpha) * (self._var + d * incr)
        self._recent.append(value)
        insort(self._sorted, value)
        if len(self._recent) > self.window:
            old = self._recent.popleft()
            del self._sorted[bisect_left(self._sorted, old)]

    def statistics(self) -> AnomalyStats:
        median = self._median() if self._sorted else None
        return AnomalyStats(
            samples=self._samples,
            anomalies=self._anomalies,
            mean=self._mean,
            sd=None if self._mean is None else math.sqrt(self._var),
            median=median,
            mad=None if median is None else self._mad(median),
        )

    def __repr__(self) -> str:
        return (
            f"AnomalyDetector(samples={self._samples}, anomalies={self._anomalies}, "
            f"mean={self._mean!r}, window={len(self._recent)}/{self.window}, "
            f"warmup={self.warmup}, min_band={self.min_band})"
        )
