"""Screenshot the demo (docs/demo.png) with the shipped checkpoint: headless Chromium driven by Playwright.

    python scripts/screenshot_demo.py --prompt "bus, car" --image examples/street_cars_bus.jpg --out docs/demo.png
    python scripts/screenshot_demo.py --image examples/street_cars_bus.jpg --prompt "" --click 195,345 \
        --out docs/demo-visual.png   # a visual prompt: clicks (pixels of the photo) on the prompt canvas
"""

import argparse
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_lazy_images(page, timeout_s: float = 60.0) -> None:
    """Scroll down the page and back: Gradio's images load lazily, and a full-page screenshot does not scroll, so
    whatever is below the window would be taken empty. Waits until every image on the page has loaded."""
    height = page.evaluate("document.body.scrollHeight")
    step = page.viewport_size["height"] // 2
    for y in range(0, height + step, step):
        page.evaluate(f"window.scrollTo(0, {y})")
        time.sleep(0.2)
    page.wait_for_function("[...document.images].every(i => i.complete)", timeout=timeout_s * 1000)
    page.evaluate("window.scrollTo(0, 0)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", default=str(REPO / "examples" / "two_dogs.jpg"))
    ap.add_argument("--prompt", default="dog")
    ap.add_argument("--checkpoint", default=None, help="default: the shipped checkpoint")
    ap.add_argument("--out", default=str(REPO / "docs" / "demo.png"))
    ap.add_argument("--tab", default="Segment", choices=["Segment", "Attention"])
    ap.add_argument("--click", action="append", default=[], metavar="X,Y",
                    help="click the prompt canvas at this pixel of the photo (repeatable; geometric checkpoints)")
    ap.add_argument("--box", default=None, metavar="X0,Y0,X1,Y1", help="type this box (geometric checkpoints)")
    ap.add_argument("--find-all", action="store_true", help="tick 'Find all like this' (the box is an exemplar)")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    port = free_port()
    cmd = [sys.executable, str(REPO / "app.py"), "--port", str(port)]
    if args.checkpoint:
        cmd += ["--checkpoint", args.checkpoint]
    server = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(120_000)
            page.goto(url, wait_until="domcontentloaded")
            page.get_by_label("What to segment").wait_for()
            page.locator("input[type=file]").first.set_input_files(args.image)
            page.get_by_label("What to segment").fill(args.prompt)
            if args.click:
                from PIL import Image

                width = Image.open(args.image).width
                canvas = page.locator("#prompt-canvas img").first
                canvas.wait_for()
                for i, xy in enumerate(args.click):
                    k = canvas.bounding_box()["width"] / width  # the canvas shows the photo scaled
                    x, y = (float(v) * k for v in xy.split(","))
                    canvas.click(position={"x": x, "y": y})
                    page.locator("#clicks").get_by_text(f"{i + 1} point").wait_for()
            if args.box:
                # after the new photo has reached the canvas: a new photo clears the clicks and the box
                page.locator("#prompt-canvas img").first.wait_for()
                page.locator("#clicks").get_by_text("no points").wait_for()
                box = page.get_by_label("Box x0,y0,x1,y1")
                box.fill(args.box)
                box.press("Enter")
            if args.find_all:
                page.get_by_label("Find all like this").check()
            page.get_by_role("button", name="Segment").click()
            page.locator("#summary li").first.wait_for()
            if args.tab == "Attention":
                page.get_by_role("tab", name="Attention").click()
                page.locator("#attn-gallery img").first.wait_for()
            load_lazy_images(page)
            time.sleep(1)  # let images finish rendering
            page.screenshot(path=args.out, full_page=True)
            browser.close()
        print(f"wrote {args.out}")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
