"""Render bench/run.py's JSON lines as the Markdown table of bench/README.md.

    python bench/run.py | tee bench/latest.jsonl
    python bench/table.py bench/latest.jsonl
"""

from __future__ import annotations

import json
import sys


def fmt(x: float) -> str:
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 0.1:
        return f"{x:.3f}"
    return f"{x:.4f}"


def main(path: str) -> None:
    with open(path, encoding="utf-8") as f:
        lines = [json.loads(line) for line in f if line.strip()]
    print("| measurement | unit | median | min - max | ratio (min - max) | vs | target | met |")
    print("|---|---|---|---|---|---|---|---|")
    for line in lines:
        if "median" not in line:
            continue
        ratio = ""
        if "ratio" in line:
            ratio = f"{line['ratio']:.3g} ({line['ratio_min']:.3g} - {line['ratio_max']:.3g})"
        met = {True: "**met**", False: "not met", None: ""}[line.get("met")]
        if line.get("skipped"):
            met = f"skipped: {line['skipped']}"
        print(f"| {line['name']} | {line['unit']} | {fmt(line['median'])} | "
              f"{fmt(line['min'])} - {fmt(line['max'])} | {ratio} | {line.get('baseline') or ''} "
              f"| {line.get('target') or ''} | {met} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench/latest.jsonl")
