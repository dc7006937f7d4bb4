#!/usr/bin/env python3
"""Reads bench/load.sh's RESULT lines (`WHO requests=.. rps=.. p50_us=.. p99_us=.. errors=..`)
on stdin; prints medians per side and the project/floor ratios."""
import statistics
import sys

rows = []
for line in sys.stdin:
    if not line.strip():
        continue
    who, *fields = line.split()
    row = dict(kv.split("=") for kv in fields)
    row["who"] = who
    rows.append(row)


def med(who, key):
    return statistics.median(float(r[key]) for r in rows if r["who"] == who)


for who in ("floor", "project"):
    print(f"{who:8s} median: {med(who, 'rps'):9.1f} req/s  p50 {med(who, 'p50_us'):6.0f} us  p99 {med(who, 'p99_us'):6.0f} us")
errors = sum(int(r["errors"]) for r in rows)
print(f"project/floor: throughput {med('project', 'rps') / med('floor', 'rps'):.2f}x, "
      f"p99 {med('project', 'p99_us') / med('floor', 'p99_us'):.2f}x; errors {errors}")
