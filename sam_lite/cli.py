"""The ``sam-lite`` command.

    sam-lite predict IMAGE "red car" [-o overlay.png] [--json] [--threshold 0.5] [--checkpoint DIR]
    sam-lite predict IMAGE [PROMPT] --point X,Y[,LABEL] ... | --box X0,Y0,X1,Y1 | --exemplar X0,Y0,X1,Y1 ...
    sam-lite demo [--host 127.0.0.1] [--port 7860] [--checkpoint DIR]
    sam-lite predict ... --device auto|cpu|cuda|mps   # also demo, train, eval, eval-boxes, export, benchmark
    sam-lite train ... | eval ... | export ... | benchmark ... | convert ...

``train``, ``eval``, ``export``, ``benchmark`` and ``convert`` hand all their arguments to their own modules (so
``sam-lite train --help`` shows the training script's help); those are imported only when asked for.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import sys
from pathlib import Path
from typing import Callable

EXIT_USAGE = 2

# name -> (module, function, help); the module's function receives the remaining arguments
DELEGATES: dict[str, tuple[str, str, str]] = {
    "train": ("sam_lite.training.train", "main", "train a model (arguments go to sam_lite.training.train)"),
    "eval": ("sam_lite.evaluation.evaluate", "main", "evaluate a checkpoint (arguments go to sam_lite.evaluation.evaluate)"),
    "eval-boxes": ("sam_lite.evaluation.boxes", "main", "the box protocol on every validation photo (arguments go to "
                                                        "sam_lite.evaluation.boxes)"),
    "export": ("sam_lite.export", "main", "export a checkpoint (arguments go to sam_lite.export)"),
    "convert": ("sam_lite.data.convert", "main", "turn VIA, labelme or index-PNG annotations into a COCO dataset "
                                                "(arguments go to sam_lite.data.convert)"),
    "benchmark": ("sam_lite.benchmarking.cli", "main", "time the model (arguments go to sam_lite.benchmarking.cli)"),
}


class _Fail(Exception):
    """A user-facing error: printed as one line to stderr, exit code 2."""


def _threshold(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sam-lite", description="sam-lite: segment every instance of a concept named in text.",
        epilog="Run 'sam-lite COMMAND --help' for a command's options.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"sam-lite {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("predict", help="segment an image from a text prompt, points, a box or exemplar boxes",
                       description="Segment every instance of PROMPT in IMAGE; or, with --point / --box, the one "
                                   "object under the points or in the box; or, with --exemplar, every instance like "
                                   "the exemplar boxes (and PROMPT, if given). Coordinates are pixels of the photo. "
                                   "Prints one line per instance, or the result as JSON with --json; -o writes an "
                                   "overlay picture. Visual prompts need a checkpoint trained with geometric prompts.")
    p.add_argument("image", help="image file (JPEG, PNG, ...)")
    p.add_argument("prompt", nargs="?", default=None,
                   help="what to segment, e.g. 'red car'; several prompts separated by commas (one prompt, or none, "
                        "with --point, --box or --exemplar)")
    p.add_argument("--point", action="append", metavar="X,Y[,LABEL]",
                   help="a click in photo pixels, LABEL 1 (positive, the default) or 0 (negative); repeatable")
    p.add_argument("--box", metavar="X0,Y0,X1,Y1", help="a box around the object, photo pixels (xyxy)")
    p.add_argument("--exemplar", action="append", metavar="X0,Y0,X1,Y1",
                   help="a box around one example: find every instance like it; repeatable")
    p.add_argument("--multimask", action="store_true",
                   help="with --point / --box: up to 3 alternative masks, each with its predicted IoU (SAM's ambiguity)")
    p.add_argument("-o", "--output", metavar="PNG", help="write the image with masks and boxes drawn on it here")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout (a list for several "
                                                       "comma-separated prompts)")
    p.add_argument("--threshold", type=_threshold, default=None,
                   help="score threshold in [0, 1] (default: the checkpoint's calibrated threshold)")
    p.add_argument("--checkpoint", metavar="DIR", help="checkpoint directory (default: checkpoints/sam-lite-base)")
    p.add_argument("--max-instances", type=int, default=None, help="keep at most this many instances per prompt")
    from .device import add_device_argument

    add_device_argument(p)

    sub.add_parser("demo", help="start the Gradio demo (see 'sam-lite demo --help')", add_help=False)
    for name, (_, _, help_text) in DELEGATES.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


# --------------------------------------------------------------------------------------------------------------
def _split_prompts(text: str) -> list[str]:
    prompts = [" ".join(p.split()) for p in text.split(",")]
    prompts = [p for p in prompts if p]
    if not prompts:
        raise _Fail("the prompt is empty: say what to segment, e.g. 'red car'")
    return prompts


def _numbers(text: str, flag: str, sizes: tuple[int, ...], form: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in sizes:
        raise _Fail(f"{flag} needs {form} (numbers separated by commas), got {text!r}")
    return values


def visual_prompt_args(args: argparse.Namespace) -> dict:
    """--point / --box / --exemplar -> predict() keyword arguments (points, point_labels, box, exemplars)."""
    out: dict = {}
    if args.point:
        pts = [_numbers(t, "--point", (2, 3), "X,Y or X,Y,LABEL") for t in args.point]
        for t, p in zip(args.point, pts):
            if len(p) == 3 and p[2] not in (0.0, 1.0):
                raise _Fail(f"--point LABEL must be 1 (positive) or 0 (negative), got {t!r}")
        out["points"] = [p[:2] for p in pts]
        out["point_labels"] = [p[2] if len(p) == 3 else 1.0 for p in pts]
    if args.box:
        out["box"] = _numbers(args.box, "--box", (4,), "X0,Y0,X1,Y1")
    if args.exemplar:
        out["exemplars"] = [_numbers(t, "--exemplar", (4,), "X0,Y0,X1,Y1") for t in args.exemplar]
    return out


def draw_overlay(image, results, names: list[str] | None = None) -> "object":
    """RGB PIL image + results -> PIL image with every mask filled and every box outlined and labelled (``names``:
    one label per result instead of its prompt). A visual prompt is drawn on top: its box and exemplars in white,
    positive points green, negative ones red."""
    import numpy as np
    import torch
    from PIL import Image
    from torchvision.utils import draw_bounding_boxes, draw_keypoints, draw_segmentation_masks

    palette = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324"]
    canvas = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()
    masks, boxes, labels, colours = [], [], [], []
    for i, r in enumerate(results):
        for j in range(len(r)):
            masks.append(r.masks[j])
            boxes.append(r.boxes[j])
            labels.append(f"{names[i] if names else r.prompt} #{j + 1} {float(r.scores[j]):.2f}")
            colours.append(palette[i % len(palette)])
    if masks:
        # one mask per call: torchvision paints pixels where masks overlap black when given several at once
        for mask, colour in reversed(list(zip(masks, colours))):  # best instance drawn last, on top
            canvas = draw_segmentation_masks(canvas, mask[None].bool(), alpha=0.45, colors=[colour])
        width = max(2, round(max(image.size) / 300))
        canvas = draw_bounding_boxes(canvas, torch.stack(boxes).float(), labels=labels, colors=colours, width=width)
    width = max(2, round(max(image.size) / 300))
    for r in results:
        v = getattr(r, "visual_prompt", None) or {}
        drawn = ([v["box"]] if "box" in v else []) + v.get("exemplars", [])
        if drawn:
            canvas = draw_bounding_boxes(canvas, torch.tensor(drawn, dtype=torch.float), colors="white", width=width)
        for xy, label in zip(v.get("points", []), v.get("point_labels", [])):
            canvas = draw_keypoints(canvas, torch.tensor([[xy]], dtype=torch.float), radius=2 * width,
                                    colors="#00e000" if label == 1 else "#ff2020")
    return Image.fromarray(canvas.permute(1, 2, 0).numpy())


def cmd_predict(args: argparse.Namespace) -> int:
    from .predictor import SamLitePredictor
    from .processing import load_image

    visual = visual_prompt_args(args)
    if visual:
        prompts = _split_prompts(args.prompt) if args.prompt is not None and args.prompt.strip() else [""]
        if len(prompts) > 1:
            raise _Fail(f"--point, --box and --exemplar go with one prompt, got {len(prompts)} comma-separated ones")
    elif args.prompt is None:
        raise _Fail("nothing to segment: give a PROMPT, --point, --box or --exemplar")
    else:
        prompts = _split_prompts(args.prompt)
    if args.multimask and not ({"points", "box"} & set(visual)):
        raise _Fail("--multimask goes with --point or --box")
    if args.max_instances is not None and args.max_instances < 1:
        raise _Fail(f"--max-instances must be >= 1, got {args.max_instances}")
    if args.output and Path(args.output).suffix.lower() not in {".png", ".jpg", ".jpeg", ".webp"}:
        raise _Fail(f"--output must end in .png, .jpg or .webp, got {args.output!r}")
    from .device import resolve_device

    try:
        device = resolve_device(args.device)  # fail fast: a missing GPU is one line, not a traceback
    except ValueError as e:
        raise _Fail(str(e)) from None
    try:
        image = load_image(args.image)  # fail fast, before the model is loaded
        if visual:  # coordinates too
            from .visual_prompts import check_visual_prompt

            check_visual_prompt(visual.get("points"), visual.get("point_labels"), visual.get("box"),
                                visual.get("exemplars"), (image.height, image.width))
    except ValueError as e:
        raise _Fail(str(e)) from None
    try:
        predictor = SamLitePredictor.from_pretrained(args.checkpoint, device=device)
    except (FileNotFoundError, ValueError) as e:
        raise _Fail(f"cannot load the checkpoint: {e}") from None
    predictor.set_image(image)
    try:
        if visual:
            results = [predictor.predict(prompts[0] or None, **visual, multimask_output=args.multimask,
                                         score_threshold=args.threshold, max_instances=args.max_instances)]
        else:
            results = predictor.predict(prompts, score_threshold=args.threshold, max_instances=args.max_instances)
    except ValueError as e:  # e.g. a text-only checkpoint asked for a visual prompt
        raise _Fail(str(e)) from None
    names = [r.prompt or ("exemplar match" if "exemplars" in visual else "object") for r in results]

    if args.output:
        out = Path(args.output)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            draw_overlay(image, results, names).save(out)
        except OSError as e:
            raise _Fail(f"cannot write {out}: {e}") from None
    if args.json:
        payload = [r.to_json() for r in results]
        print(json.dumps(payload[0] if len(payload) == 1 else payload, indent=2))
    else:
        for r, name in zip(results, names):
            if len(r) == 0:
                print(f"no {name} found, presence {r.presence:.2f}")
                continue
            print(f"{name}: {len(r)} found, presence {r.presence:.2f}")
            for j, (s, b, m) in enumerate(zip(r.scores, r.boxes, r.masks)):
                box = ", ".join(f"{float(v):.0f}" for v in b)
                iou = f"  predicted IoU {float(r.iou_predictions[j]):.2f}" if r.iou_predictions is not None else ""
                print(f"  #{j + 1}  score {float(s):.2f}  box [{box}]  area {int(m.sum())} px{iou}")
        if args.output:
            print(f"overlay written to {args.output}")
    return 0


def _load_delegate(name: str) -> Callable[[list[str]], int | None]:
    target, func, _ = DELEGATES[name]
    try:
        module = importlib.import_module(target)
    except ModuleNotFoundError as e:
        if e.name and (target == e.name or target.startswith(e.name + ".")):
            raise _Fail(f"'{name}' is not available in this installation: no module {target}") from None
        raise
    fn = getattr(module, func, None)
    if not callable(fn):
        raise _Fail(f"'{name}' is not available: {target} has no {func}() function")
    return fn


def _run_delegate(name: str, fn: Callable, rest: list[str]) -> int:
    """Call ``fn(rest)`` (or ``fn()``, which reads ``sys.argv``: set for both)."""
    try:
        takes_args = bool(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        takes_args = True
    saved = sys.argv
    sys.argv = [f"sam-lite {name}", *rest]  # also what argparse shows as the program name
    try:
        rc = fn(rest) if takes_args else fn()
    finally:
        sys.argv = saved
    return rc if isinstance(rc, int) and not isinstance(rc, bool) else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "demo":
            from .demo import main as demo_main

            return int(demo_main(argv[1:]) or 0)
        if argv and argv[0] in DELEGATES:
            return _run_delegate(argv[0], _load_delegate(argv[0]), argv[1:])
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        return cmd_predict(args)
    except _Fail as e:
        prog = f"sam-lite {argv[0]}" if argv and not argv[0].startswith("-") else "sam-lite"
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
