"""Train sam-lite: see ``python scripts/train.py --help``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sam_lite.training.train import main  # noqa: E402

if __name__ == "__main__":
    main(sys.argv[1:])
