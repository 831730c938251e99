"""Run the ```bash blocks of a Markdown document in order, as written, and keep what they print.

    python scripts/run_doc.py docs/finetune.md --log docs/results/finetune/run.log

Each block runs in ``bash -euo pipefail`` from the repository root with ``.venv/bin`` first on PATH (so ``sam-lite``
is the project's); the log holds every command and its output. The run stops at the first block that fails. Blocks
fenced as ```console or ```text are shown, not run. This is how a tutorial's figures are produced: run it, then
copy the printed figures into the text.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)


def bash_blocks(markdown: str) -> list[str]:
    """The document's ```bash blocks, in order."""
    return [m.group(1) for m in BLOCK.finditer(markdown)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("document")
    ap.add_argument("--log", required=True, help="write every command and its output here")
    ap.add_argument("--first", type=int, default=1, help="start at this block (1-based)")
    args = ap.parse_args(argv)
    blocks = bash_blocks(Path(args.document).read_text())
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
           "HF_HUB_OFFLINE": "1"}
    Path(args.log).parent.mkdir(parents=True, exist_ok=True)
    with open(args.log, "a") as log:
        for i, block in enumerate(blocks[args.first - 1:], start=args.first):
            log.write(f"\n### block {i} ({time.strftime('%Y-%m-%d %H:%M:%S')})\n{block}")
            log.flush()
            t0 = time.time()
            proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=ROOT, env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            out = re.sub(r"[^\n]*\r", "", proc.stdout)  # progress bars: keep each line's final state
            log.write(out + f"### block {i}: exit {proc.returncode}, {time.time() - t0:.0f} s\n")
            log.flush()
            print(f"block {i}: exit {proc.returncode}, {time.time() - t0:.0f} s", flush=True)
            if proc.returncode:
                print(out[-2000:], file=sys.stderr)
                return proc.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
