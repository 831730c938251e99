"""``python -m sam_lite.demo [--host 127.0.0.1] [--port 7860] [--checkpoint DIR]``."""

import sys

from . import main

sys.exit(main(sys.argv[1:], prog="python -m sam_lite.demo"))
