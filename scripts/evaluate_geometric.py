import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))  # noqa: E401
from sam_lite.evaluation.geometric import main  # noqa: E402
sys.exit(main())
