"""Medians of a bench's result files: each line of OUT/MODE is "metric value", one line a
run; load(OUT, MODE) gives {metric: median}."""
import statistics


def load(out, mode):
    m = {}
    for line in open(f"{out}/{mode}"):
        k, v = line.split()
        m.setdefault(k, []).append(float(v))
    return {k: statistics.median(v) for k, v in m.items()}
