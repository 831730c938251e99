"""The Gradio demo: segment anything you can name, then look inside the attention that found it.

``python app.py``, ``sam-lite demo`` or ``python -m sam_lite.demo`` start it on http://127.0.0.1:7860. Two tabs:

* **Segment**: an image, a text prompt ("red car"; several separated by commas), a score threshold -> one coloured
  layer per instance and the presence probability of each concept. Checkpoints trained with ``geometric_prompts``
  also take SAM's visual prompts there: clicks on the photo add positive / negative points or box corners (or a box
  is typed), and the object under them comes back (best mask, or 3 alternatives with their predicted IoU); "find all
  like this" makes the box an exemplar of what to find everywhere. Text is then optional, and with it both constrain.
* **Attention**: the Q/K/V story made visible. First the prompt's **concept map**: P(prompt | pixel) from the image
  encoder's per-pixel concept embedding, a heat map on the photo on an absolute 0..1 scale (the first place where
  the model says which patches are relevant to the words; hidden for checkpoints without a concept map). Then, for
  the best object queries of the prompt, each decoder layer's cross-attention over the image (heat maps on the
  photo) and over the prompt's words (bar chart); and the image encoder's self-attention from any patch you click
  on.

One :class:`SamLitePredictor` is shared by every visitor, guarded by a lock; the image embedding is kept and reused
while the same image (by content hash) keeps coming back, so a new prompt on the same photo costs only the decoder.

Modules: :mod:`.service` (input checks, the shared predictor), :mod:`.drawing` (overlays, charts), :mod:`.views`
(what each tab computes), :mod:`.visual` (clicks and boxes -> visual prompts), :mod:`.events` (the one error
handling every event handler is registered with), :mod:`.blocks` (the Gradio app, ``serve`` and ``main``).
"""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from .blocks import EXAMPLES, EXAMPLES_DIR, build_demo, free_port, main, serve  # noqa: E402
from .drawing import bar_chart, heat_overlay, instance_colour, mark_point, probability_overlay  # noqa: E402
from .service import (DISPLAY_MAX_SIDE, Photo, SegmentationService, load_photo, parse_prompts,  # noqa: E402
                      prepare_image, readable_upload_errors, require_image, user_errors)
from .views import AttentionView, ConceptView, concept_view, explain, patch_attention, segment  # noqa: E402
from .visual import Clicks, add_click, parse_box, segment_any, visual_prompt  # noqa: E402

__all__ = ["EXAMPLES", "EXAMPLES_DIR", "DISPLAY_MAX_SIDE", "AttentionView", "Clicks", "ConceptView", "Photo",
           "SegmentationService", "add_click", "bar_chart", "build_demo", "concept_view", "explain", "free_port",
           "heat_overlay", "instance_colour", "load_photo", "main", "mark_point", "parse_box", "parse_prompts",
           "patch_attention", "prepare_image", "probability_overlay", "readable_upload_errors", "require_image",
           "segment", "segment_any", "serve", "user_errors", "visual_prompt"]
