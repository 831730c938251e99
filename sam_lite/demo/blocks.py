"""The Gradio Blocks app, the server and the command line that starts it."""

import argparse
import socket
import sys
from pathlib import Path

import gradio as gr

from ..device import add_device_argument, resolve_device
from ..predictor import DEFAULT_CHECKPOINT, SamLitePredictor
from .events import ASK, QUIET, WARN, listen
from .service import MAX_PROMPT_CHARS, SegmentationService, readable_upload_errors
from .views import explain, patch_attention
from .visual import CLICK_MODES, POSITIVE, Clicks, add_click, describe_clicks, new_photo, prompt_canvas, segment_any

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = REPO_ROOT / "examples"
EXAMPLES = [
    ("girls_goats_meadow.jpg", "person, sky, grass"),  # a validation photo: never trained on
    ("street_cars_bus.jpg", "car, bus, tree"),
    ("man_with_dog.jpg", "person, dog, couch"),
    ("dinner_table.jpg", "person, dining table"),
    ("two_dogs.jpg", "dog, toilet"),
]
MAX_UPLOAD = "25mb"
CHART_HEIGHT = 340  # px: the word charts and the photo to click, so they have their room before they load
# A gallery as tall as all its tiles (Gradio's height="auto" caps it at 55% of the window and scrolls inside)
GALLERY_HEIGHT = "max-content"


INTRO = """# sam-lite: segment anything you can name
Upload a photo (or pick an example), type what to find (**red car**; several things: **car, person**) and press
**Segment**. Every instance gets its own layer; the presence probability says whether the concept is in the photo at
all. Checkpoints trained with geometric prompts also take SAM's visual prompts: click on the photo for positive and
negative points or two box corners (or type the box), and the object under them comes back with its predicted IoU;
**Find all like this** turns the box into an example of what to find everywhere. The **Attention** tab shows how the
model found it."""

VISUAL_TEXT = """**Visual prompts.** Click on the photo below: points and a box pick *one* object (its best mask, no
threshold; **Show 3 alternatives** gives SAM's answer to an ambiguous click, each with its predicted IoU). **Find all like
this** makes the box an example: every instance like it above the score threshold. Text is optional here; with it,
text and clicks both constrain."""

TEXT_ONLY_NOTE = ("<sub>This checkpoint takes text prompts only (it was trained without geometric prompts), so "
                  "clicks, boxes and exemplars are off.</sub>")

CONCEPT_TEXT = """**Concept map: which patches are relevant to the words.** Once per image, the image encoder paints
every 8 px cell with an embedding in the same sentence space as the text encoder's prompt embedding; comparing the
prompt with the concepts the map knows gives P(prompt | pixel). The decoder reads this map as a prior before any
query looks at the image."""

QKV_IMAGE = """**Object queries look at the image** (decoder image cross-attention). **Q**: the object query, a learned
slot that asks "is my object here?"; **K**: every image patch, compared with the query to decide how relevant it is;
**V**: what each patch passes on to the query. Bright = the patches this query listened to. The presence token is a
special query that only decides *whether* the concept is in the image."""

QKV_TEXT = """**Which word the query listens to** (decoder text cross-attention). **Q**: the object query; **K**: each
word piece of the prompt (`[CLS]` and `[SEP]` are the tokenizer's start and end markers); **V**: the word's meaning
vector, which the query mixes into itself in these proportions."""

QKV_SELF = """**Patches look at each other** (image encoder self-attention). Click a point on the photo. **Q**: the
patch you clicked; **K**: every patch of the image, including itself, scored for how related it is; **V**: the
features those patches pass back, so the clicked patch's new feature is a weighted mix of them. The bar chart is the
fusion layer: the same patch as Q, with the prompt's words as K and V."""


def build_demo(predictor: SamLitePredictor | SegmentationService) -> gr.Blocks:
    """The two-tab Blocks app around a predictor (not launched; call ``.queue().launch()`` or :func:`serve`)."""
    service = predictor if isinstance(predictor, SegmentationService) else SegmentationService(predictor)
    config = service.predictor.model.config

    def on_segment(image, text, threshold, box_text="", find_all=False, multimask=False, clicks=None):
        value, colours, summary, prompts = segment_any(service, image, text, threshold, clicks, box_text, find_all,
                                                       multimask)
        return (gr.AnnotatedImage(value=value, color_map=colours), summary,
                gr.Dropdown(choices=prompts, value=prompts[0]) if prompts else gr.skip())

    def on_explain(image, prompt, threshold, n_queries):
        gallery, chart, view, caption, concept = explain(service, image, prompt, threshold, n_queries)
        marked, self_gallery, words, self_caption = patch_attention(view, view.photo.width / 2,
                                                                    view.photo.height / 2)
        self_caption += " The centre of the photo to begin with: click anywhere on it to pick another patch."
        concept_image = gr.Image(value=concept.image, visible=concept.image is not None)
        return (concept_image, concept.caption, gallery, chart, caption, view, marked, self_gallery, words,
                self_caption)

    def on_tab(image, prompt, threshold, n_queries):
        """Opening the tab shows the last prompt's attention (the centre patch picked) without a click."""
        if image is None or not (prompt or "").strip():
            return [gr.skip()] * len(explain_outputs)
        return on_explain(image, prompt, threshold, n_queries)

    def on_click(view, evt: gr.SelectData):
        if view is None:
            raise ValueError("Press 'Show attention' first.")
        x, y = evt.index[0], evt.index[1]
        return patch_attention(view, x, y)

    with gr.Blocks(title="sam-lite") as demo:
        gr.Markdown(INTRO)
        with gr.Tab("Segment"):
            with gr.Row():
                with gr.Column(scale=1):
                    image = readable_upload_errors(gr.Image(
                        label="Image", type="filepath", image_mode=None, sources=["upload", "clipboard"],
                        height=300 if config.geometric_prompts else 420))
                    prompt = gr.Textbox(label="What to segment", placeholder="red car   (several: car, person)",
                                        max_length=MAX_PROMPT_CHARS, max_lines=1)
                    if config.geometric_prompts:
                        visual_inputs = visual_controls(image)
                    else:
                        visual_inputs = []
                        gr.Markdown(TEXT_ONLY_NOTE, elem_id="text-only-note")
                    threshold = gr.Slider(0.0, 1.0, value=service.predictor.inference_config.score_threshold, step=0.01,
                                          label="Score threshold", elem_id="threshold",
                                          info="keep instances scoring at least this (score: the chance it is right)")
                    run = gr.Button("Segment", variant="primary")
                with gr.Column(scale=1):
                    result = gr.AnnotatedImage(label="Instances", height=420, format="jpeg", elem_id="result")
                    summary = gr.Markdown(elem_id="summary")
            examples = [[str(EXAMPLES_DIR / f), p] for f, p in EXAMPLES if (EXAMPLES_DIR / f).is_file()]
            if examples:
                gr.Examples(examples, inputs=[image, prompt], label="Examples (COCO photos, CC BY / CC BY-SA: "
                            "see examples/CREDITS.md)")
        with gr.Tab("Attention") as attn_tab:
            with gr.Row():
                attn_prompt = gr.Dropdown(label="Prompt", choices=[], value=None, allow_custom_value=True,
                                          info="the last prompts from the Segment tab, or type one")
                n_queries = gr.Slider(1, 4, value=2, step=1, label="Object queries to show")
                explain_btn = gr.Button("Show attention", variant="primary")
            attn_caption = gr.Markdown(elem_id="attn-caption")
            gr.Markdown(CONCEPT_TEXT)
            concept_image = gr.Image(label="Concept map: P(prompt | pixel) on the photo", type="pil",
                                     interactive=False, elem_id="concept-map", height=420,
                                     visible=bool(getattr(config, "concept_map", False)))
            concept_caption = gr.Markdown(elem_id="concept-caption")
            gr.Markdown(QKV_IMAGE)
            # one row per query, one column per decoder layer, as tall as all its rows: no inner scrollbar
            attn_gallery = gr.Gallery(label="Cross-attention over the image (rows: presence token, then queries; "
                                      "columns: decoder layers)", elem_id="attn-gallery",
                                      columns=min(6, max(1, config.decoder_layers)), height=GALLERY_HEIGHT,
                                      object_fit="contain", allow_preview=False)
            gr.Markdown(QKV_TEXT)
            word_chart = gr.Image(label="Cross-attention over the prompt's words", type="pil", interactive=False,
                                  elem_id="word-chart", height=CHART_HEIGHT)
            gr.Markdown(QKV_SELF)
            view_state = gr.State(None)
            # the photo to click and the words its patch listens to side by side: both are there on first open
            # (the centre patch), not below a gallery the visitor would have to scroll past
            with gr.Row(equal_height=True):
                with gr.Column(scale=2, min_width=240):
                    click_photo = gr.Image(label="Click a point (first: the centre patch)", type="pil",
                                           interactive=False, elem_id="click-photo", height=CHART_HEIGHT)
                    self_caption = gr.Markdown(elem_id="self-caption")
                with gr.Column(scale=3, min_width=320):
                    patch_words = gr.Image(label="Fusion: which words the clicked patch listens to", type="pil",
                                           interactive=False, elem_id="patch-words", height=CHART_HEIGHT)
            self_gallery = gr.Gallery(label="Encoder self-attention from the clicked patch", elem_id="self-gallery",
                                      columns=min(4, max(2, config.encoder_layers)), height=GALLERY_HEIGHT,
                                      object_fit="contain", allow_preview=False, fit_columns=False)

        # every handler goes through events.listen: one error handling (ASK: the visitor asked, a clear gr.Error;
        # WARN: a click, a yellow warning and the outputs unchanged; QUIET: an automatic refresh, nothing said)
        seg_inputs, seg_outputs = [image, prompt, threshold, *visual_inputs], [result, summary, attn_prompt]
        listen(run.click, on_segment, seg_inputs, seg_outputs, errors=ASK, api_name="segment")
        for text_field in [prompt, *visual_inputs[:1]]:  # Enter in the prompt or in the box text segments too
            listen(text_field.submit, on_segment, seg_inputs, seg_outputs, errors=ASK)
        explain_outputs = [concept_image, concept_caption, attn_gallery, word_chart, attn_caption, view_state,
                           click_photo, self_gallery, patch_words, self_caption]
        explain_inputs = [image, attn_prompt, threshold, n_queries]
        listen(explain_btn.click, on_explain, explain_inputs, explain_outputs, errors=ASK, api_name="attention")
        listen(attn_tab.select, on_tab, explain_inputs, explain_outputs, errors=QUIET)
        listen(click_photo.select, on_click, [view_state], [click_photo, self_gallery, patch_words, self_caption],
               errors=WARN)
    return demo


def visual_controls(image: gr.Image) -> list:
    """The Segment tab's click-on-the-photo controls, wired to the upload ``image`` (its clicks are dropped
    whenever the photo changes) -> the extra inputs of the Segment button: box text, find all, multimask, clicks."""
    gr.Markdown(VISUAL_TEXT)
    with gr.Group():
        canvas = gr.Image(label="Click on the photo", type="pil", interactive=False, elem_id="prompt-canvas",
                          height=360)
        mode = gr.Radio(CLICK_MODES, value=POSITIVE, label="Click adds", info="two box corners make a box; a third "
                        "starts a new one")
        with gr.Row():
            box_text = gr.Textbox(value="", label="Box x0,y0,x1,y1", placeholder="or type it: 40,60,300,420",
                                  info="pixels of the photo", max_lines=1, elem_id="box", scale=2)
            find_all = gr.Checkbox(value=False, label="Find all like this",
                                   info="the box is an example: every instance like it (score threshold)")
            multimask = gr.Checkbox(value=False, label="Show 3 alternatives",
                                    info="points / a box: SAM's ambiguity answer, each with its predicted IoU")
    clear = gr.Button("Clear clicks", size="sm")
    clicks_info = gr.Markdown(elem_id="clicks")
    clicks = gr.State(Clicks())

    def show(c: Clicks, box: str, find: bool):
        return c, box, prompt_canvas(c, box, find), f"<sub>{describe_clicks(c, box)}</sub>"

    def on_select(c: Clicks, box: str, how: str, find: bool, evt: gr.SelectData):
        return show(*add_click(c, box, how, evt.index), find)

    def on_photo(im, find: bool):
        return show(new_photo(im), "", find)

    def on_clear(c: Clicks, find: bool):
        return show(Clicks(c.photo), "", find)

    def on_edit(c: Clicks, box: str, find: bool):
        """The box being typed (or 'find all' ticked): redraw. A box typed half way is drawn as nothing."""
        return show(c, box, find)[2:]

    shown = [clicks, box_text, canvas, clicks_info]
    listen(image.change, on_photo, [image, find_all], shown, errors=WARN)
    listen(canvas.select, on_select, [clicks, box_text, mode, find_all], shown, errors=WARN)
    listen(clear.click, on_clear, [clicks, find_all], shown, errors=WARN)
    for edited in (box_text, find_all):
        listen(edited.input, on_edit, [clicks, box_text, find_all], shown[2:], errors=QUIET,
               trigger_mode="always_last")
    return [box_text, find_all, multimask, clicks]


def serve(predictor: SamLitePredictor, host: str = "127.0.0.1", port: int = 7860, block: bool = True,
          concurrency: int = 2, warm_up: bool = True) -> gr.Blocks:
    """Build, queue and launch. ``block=False`` returns at once with the server running (call ``.close()``)."""
    service = SegmentationService(predictor)
    if warm_up:
        service.warm_up()
    demo = build_demo(service)
    demo.queue(default_concurrency_limit=concurrency, max_size=64)
    demo.launch(server_name=host, server_port=port, prevent_thread_lock=not block, show_error=False,
                max_file_size=MAX_UPLOAD, allowed_paths=[str(EXAMPLES_DIR)], inbrowser=False, ssr_mode=False)
    return demo


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None, prog: str = "sam-lite demo") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Start the sam-lite Gradio demo.")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 picks a free one)")
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT),
                        help=f"checkpoint directory (default {DEFAULT_CHECKPOINT})")
    parser.add_argument("--concurrency", type=int, default=2, help="requests worked on at once (default 2)")
    add_device_argument(parser)
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be in 0..65535, got {args.port}")
    if args.concurrency < 1:
        parser.error("--concurrency must be >= 1")
    try:
        device = resolve_device(args.device)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ckpt = Path(args.checkpoint)
    if not ckpt.is_dir():
        print(f"error: checkpoint directory not found: {ckpt}\n"
              f"Train one (sam-lite train ...) or point --checkpoint at a directory with config.json and "
              f"model.safetensors.", file=sys.stderr)
        return 2
    try:
        predictor = SamLitePredictor.from_pretrained(ckpt, device=device)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: cannot load checkpoint {ckpt}: {e}", file=sys.stderr)
        return 2
    port = args.port or free_port(args.host)
    print(f"sam-lite demo on http://{args.host}:{port}  (checkpoint {ckpt}, {device}; Ctrl+C stops it)", flush=True)
    try:
        serve(predictor, args.host, port, block=True, concurrency=args.concurrency)
    except OSError as e:
        print(f"error: cannot start the server on {args.host}:{port}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0

