"""Start the sam-lite Gradio demo: ``python app.py [--host 127.0.0.1] [--port 7860] [--checkpoint DIR]``."""
import sys

from sam_lite.demo import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="app.py"))
