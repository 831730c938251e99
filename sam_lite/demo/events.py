"""One error handling for every event handler of the demo.

Every handler is registered through :func:`listen` (or wrapped by :func:`handle_errors`), which says how a failure
reaches the visitor:

* ``ASK``: the visitor asked for something (Segment, Show attention, the API): bad input (``ValueError``) becomes a
  ``gr.Error`` with the message, the red notice and what an API client receives as ``AppError``.
* ``WARN``: a side effect of a click or an upload (a click on the prompt canvas, a new photo): bad input becomes a
  yellow ``gr.Warning`` and every output keeps its value (``gr.skip()``), so the canvas keeps its photo and no
  output is replaced by an error badge.
* ``QUIET``: a live preview or an automatic refresh (typing the box, opening the Attention tab): bad input says
  nothing (the box is half typed: it is not a box *yet*) and the outputs keep their values.

Anything other than a ``ValueError`` is a bug: its traceback goes to the log, the visitor gets a short notice
(``gr.Error`` for ``ASK``, ``gr.Warning`` otherwise), never a traceback. Bad input is not a bug: nothing is logged.
"""

import functools
import html
import logging
from collections.abc import Callable

import gradio as gr

log = logging.getLogger("sam_lite.demo")

ASK, WARN, QUIET = "ask", "warn", "quiet"
MODES = (ASK, WARN, QUIET)


def _message(e: BaseException) -> str:
    # gr.Error and gr.Warning render their message as HTML; what the visitor typed must stay text
    return html.escape(str(e), quote=False)


def handle_errors(fn: Callable, mode: str = ASK, n_outputs: int = 1) -> Callable:
    """``fn`` with the error handling of ``mode`` (see the module docstring); ``n_outputs``: how many outputs the
    event has (the ``gr.skip()`` values returned when a ``WARN`` or ``QUIET`` handler fails). The wrapper keeps
    ``fn``'s signature (Gradio reads ``gr.SelectData`` parameters from it) and records ``mode`` as
    ``wrapper.error_mode``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if n_outputs < 0:
        raise ValueError(f"n_outputs must be >= 0, got {n_outputs}")

    def unchanged():
        if n_outputs == 1:
            return gr.skip()
        return tuple(gr.skip() for _ in range(n_outputs))

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error as e:  # already worded for the visitor
            if mode == ASK:
                raise
            if mode == WARN:
                gr.Warning(e.message)
            return unchanged()
        except ValueError as e:
            if mode == ASK:
                raise gr.Error(_message(e), print_exception=False) from None
            if mode == WARN:
                gr.Warning(_message(e))
            return unchanged()
        except Exception as e:  # a bug: the log gets the traceback, the visitor a short notice
            log.exception("demo handler %s failed", getattr(fn, "__name__", fn))
            notice = f"Something went wrong on the server ({type(e).__name__}); details are in its log."
            if mode == ASK:
                raise gr.Error(notice, print_exception=False) from None
            gr.Warning(notice)
            return unchanged()

    wrapper.error_mode = mode
    return wrapper


def count_outputs(outputs) -> int:
    if outputs is None:
        return 0
    return len(outputs) if isinstance(outputs, (list, tuple, set)) else 1


def listen(trigger: Callable, fn: Callable, inputs, outputs, *, errors: str = ASK, **kwargs):
    """``trigger(fn, inputs, outputs, **kwargs)`` (``trigger``: an event listener such as ``button.click``) with
    ``fn`` wrapped by :func:`handle_errors` in mode ``errors``. Handlers without an ``api_name`` get none: only the
    ones named here are API endpoints."""
    kwargs.setdefault("api_name", False)
    return trigger(handle_errors(fn, errors, count_outputs(outputs)), inputs, outputs, **kwargs)
