"""The demo's one error handling (sam_lite.demo.events): what each mode makes of bad input and of bugs, and that
every event handler of the app goes through it."""

import inspect
import logging
import warnings
from pathlib import Path

import gradio as gr
import numpy as np
import pytest

from sam_lite.demo.events import ASK, MODES, QUIET, WARN, handle_errors, listen

REPO = Path(__file__).resolve().parent.parent
DOGS = REPO / "examples" / "two_dogs.jpg"


def bad_box(box: str):
    raise ValueError(f"box {box} is empty or flipped <b>")


def broken(*_):
    raise KeyError("a bug")


def test_ask_turns_bad_input_into_a_clear_error_without_a_logged_traceback(caplog):
    with caplog.at_level(logging.DEBUG, logger="sam_lite.demo"), pytest.raises(gr.Error) as info:
        handle_errors(bad_box, ASK)("1,2,0,0")
    # the message as raised, HTML escaped (gr.Error renders HTML), and no traceback printed for a visitor's typo
    assert info.value.message == "box 1,2,0,0 is empty or flipped &lt;b&gt;"
    assert info.value.print_exception is False
    assert caplog.records == []


def test_ask_passes_worded_errors_on_and_hides_bugs(caplog):
    def worded():
        raise gr.Error("Press 'Show attention' first.")

    with pytest.raises(gr.Error, match="Press 'Show attention' first."):
        handle_errors(worded, ASK)()
    with caplog.at_level(logging.ERROR, logger="sam_lite.demo"), pytest.raises(gr.Error) as info:
        handle_errors(broken, ASK)()
    assert info.value.message == "Something went wrong on the server (KeyError); details are in its log."
    assert "a bug" not in info.value.message
    assert [r.exc_info[0] for r in caplog.records] == [KeyError]  # the traceback is in the log


def test_warn_keeps_every_output_and_warns():
    with pytest.warns(UserWarning, match="box 9 is empty or flipped"):
        out = handle_errors(bad_box, WARN, n_outputs=4)("9")
    assert out == (gr.skip(),) * 4  # the canvas and the other outputs keep their values: no error badge


def test_quiet_keeps_the_outputs_and_says_nothing():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any gr.Warning would raise here
        assert handle_errors(bad_box, QUIET, n_outputs=1)("10,20") == gr.skip()  # one output: not a tuple
        assert handle_errors(bad_box, QUIET, n_outputs=2)("10,20") == (gr.skip(), gr.skip())
        assert handle_errors(lambda x: x + 1, QUIET)(1) == 2  # a handler that works is untouched


@pytest.mark.parametrize("mode", [WARN, QUIET])
def test_a_bug_is_never_silent(mode, caplog):
    with caplog.at_level(logging.ERROR, logger="sam_lite.demo"), \
            pytest.warns(UserWarning, match=r"Something went wrong on the server \(KeyError\)"):
        assert handle_errors(broken, mode, n_outputs=2)() == (gr.skip(), gr.skip())
    assert len(caplog.records) == 1 and caplog.records[0].exc_info[0] is KeyError


def test_the_wrapper_keeps_the_signature_gradio_reads():
    def on_select(view, evt: gr.SelectData):
        return view

    wrapped = handle_errors(on_select, WARN)
    assert wrapped.error_mode == WARN and wrapped.__name__ == "on_select"
    assert inspect.signature(wrapped).parameters["evt"].annotation is gr.SelectData
    with pytest.raises(ValueError, match="mode must be one of"):
        handle_errors(on_select, "loud")
    with pytest.raises(ValueError, match="n_outputs must be >= 0"):
        handle_errors(on_select, ASK, -1)


def test_listen_registers_the_wrapped_handler_without_an_api_name_by_default():
    calls = []

    def trigger(fn, inputs, outputs, **kwargs):
        calls.append((fn, inputs, outputs, kwargs))

    listen(trigger, bad_box, ["a"], ["x", "y", "z"], errors=WARN)
    fn, inputs, outputs, kwargs = calls[0]
    assert fn.error_mode == WARN and kwargs == {"api_name": False}
    with pytest.warns(UserWarning):
        assert fn("1") == (gr.skip(),) * 3  # as many skips as outputs
    listen(trigger, bad_box, ["a"], ["x"], errors=ASK, api_name="segment")
    assert calls[1][3] == {"api_name": "segment"}


def handlers(demo) -> dict[str, list]:
    """The demo's own event handlers (not Gradio's, such as the examples' loader) by function name."""
    found = {}
    for block_fn in demo.fns.values():
        fn = block_fn.fn
        if fn is not None and getattr(fn, "__module__", "").startswith("sam_lite"):
            found.setdefault(fn.__name__, []).append(fn)
    return found


def test_every_handler_goes_through_the_one_error_handling(tiny_geometric_checkpoint, tiny_checkpoint):
    from sam_lite import SamLitePredictor
    from sam_lite.demo import build_demo

    for checkpoint in (tiny_geometric_checkpoint, tiny_checkpoint):
        demo = build_demo(SamLitePredictor.from_pretrained(checkpoint))
        found = handlers(demo)
        unwrapped = [name for name, fns in found.items() for fn in fns if getattr(fn, "error_mode", None) not in MODES]
        assert unwrapped == []
        modes = {name: {fn.error_mode for fn in fns} for name, fns in found.items()}
        assert modes["on_segment"] == {ASK} and modes["on_explain"] == {ASK}
        assert modes["on_tab"] == {QUIET} and modes["on_click"] == {WARN}
        if checkpoint == tiny_geometric_checkpoint:
            assert modes["on_edit"] == {QUIET}  # typing the box
            assert modes["on_select"] == modes["on_photo"] == modes["on_clear"] == {WARN}
            assert len(found["on_segment"]) == 3  # the button, Enter in the prompt, Enter in the box


@pytest.fixture(scope="module")
def on_edit(tiny_geometric_checkpoint):
    """The handler of the box field's input event (and of 'Find all like this')."""
    from sam_lite import SamLitePredictor
    from sam_lite.demo import build_demo

    return handlers(build_demo(SamLitePredictor.from_pretrained(tiny_geometric_checkpoint)))["on_edit"][0]


@pytest.mark.parametrize("typed", ["10", "10,20", "10,20,3", "10,20,30,", "100,80,500,40", "100,80,5,400", "1,2,x"])
def test_a_half_typed_box_draws_nothing_and_says_nothing(on_edit, typed):
    from sam_lite.demo.visual import new_photo

    clicks = new_photo(str(DOGS))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        canvas, info = on_edit(clicks, typed, False)
    assert np.array_equal(np.asarray(canvas), np.asarray(clicks.photo.image))  # the photo, nothing drawn on it
    assert "not a box yet" in info
    canvas, info = on_edit(clicks, "100,80,500,400", False)  # finished: the box is drawn
    assert not np.array_equal(np.asarray(canvas), np.asarray(clicks.photo.image))
    assert "not a box yet" not in info and "box 100,80,500,400" in info
