"""Markdown tables from evaluation JSON files (docs/results/*.json), so reported numbers are copied by code.

    python scripts/results_table.py docs/results/sam-lite-val.json docs/results/clipseg-baseline-val.json
"""

import json
import sys
from pathlib import Path

COLUMNS = [("n", "n", "{:d}"), ("gIoU", "gIoU", "{:.3f}"), ("cIoU", "cIoU", "{:.3f}"),
           ("presence_acc", "presence acc", "{:.3f}"), ("IL_MCC", "IL-MCC", "{:.3f}"), ("AP", "mask AP", "{:.3f}"),
           ("AP50", "AP50", "{:.3f}")]
TYPES = ["all", "category", "colour", "stuff", "synonym", "negative"]


def fmt(v, f):
    return "–" if v is None or (isinstance(v, float) and v != v) else f.format(v)


def table(path: str) -> str:
    d = json.loads(Path(path).read_text())
    lines = [f"`{path}` — checkpoint `{d.get('checkpoint')}`, split {d.get('split')}"
             f"{' (' + d['half'] + ' half)' if d.get('half') else ''}, {d.get('n_images')} images, score threshold "
             f"{d.get('threshold')}, presence threshold {d.get('presence_threshold', d.get('threshold'))}", "",
             "| prompt type | " + " | ".join(c[1] for c in COLUMNS) + " |",
             "| --- |" + " ---: |" * len(COLUMNS)]
    for t in TYPES:
        m = d["metrics"].get(t)
        if m:
            lines.append(f"| {t} | " + " | ".join(fmt(m.get(k), f) for k, _, f in COLUMNS) + " |")
    lat = d.get("latency_ms") or {}
    if lat:
        lines += ["", "latency (ms): " + ", ".join(f"{k} {v.get('median', v) if isinstance(v, dict) else v:.1f}"
                                                   if isinstance(v, (int, float)) or isinstance(v, dict) else f"{k} {v}"
                                                   for k, v in lat.items())]
    return "\n".join(lines)


if __name__ == "__main__":
    print("\n\n".join(table(p) for p in sys.argv[1:]))
