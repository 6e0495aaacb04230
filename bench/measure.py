"""Measuring on a noisy machine: two things alternately, so noise hits both alike, and
figures as ratios of their medians; percentiles."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def p50(samples: list[float]) -> float:
    return statistics.median(samples)


def alternately(first: Callable, second: Callable, rounds: int) -> tuple[list, list]:
    """Call two callables alternately, so machine noise hits both alike; their results."""
    first_results, second_results = [], []
    for round_number in range(rounds):
        pair = [(first, first_results), (second, second_results)]
        if round_number % 2:
            pair.reverse()
        for call, results in pair:
            results.append(call())
    return first_results, second_results


def interleaved(first, second, rounds: int) -> tuple[list[float], list[float]]:
    """Time two callables alternately (seconds each call took)."""

    def timed(call):
        def measure() -> float:
            started = time.perf_counter()
            call()
            return time.perf_counter() - started

        return measure

    return alternately(timed(first), timed(second), rounds)


def percentile(samples: list[float], share: float) -> float:
    """The nearest-rank percentile (share 0.95 → p95)."""
    ordered = sorted(samples)
    return ordered[max(0, min(len(ordered) - 1, round(share * len(ordered)) - 1))]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def ratio_figure(
    labels: tuple[str, str], samples: tuple[list, list], limit: float, target: str, **extra
) -> dict:
    """p50 of each side, their ratio, and whether it is within ``limit``."""
    ratio = p50(samples[0]) / p50(samples[1])
    return {
        f"p50_ms_{labels[0]}": round(p50(samples[0]) * 1000, 2),
        f"p50_ms_{labels[1]}": round(p50(samples[1]) * 1000, 2),
        "ratio": round(ratio, 3),
        **extra,
        "target": target,
        "ok": ratio <= limit,
    }
