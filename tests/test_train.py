"""Short real training runs in this process (checkpoint, exact resume, errors, the baseline), plus the
two that need processes of their own: kill -9 then --resume (scripts/train.py) and 2-process DDP."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


from .fixtures import write_tiny_coco

ROOT = Path(__file__).resolve().parent.parent


def _train(args):
    """Train in this process (``sam_lite.training.train.main``), restoring the thread count it sets."""
    from sam_lite.training.train import main

    threads = torch.get_num_threads()
    try:
        return main([str(a) for a in args])
    finally:
        torch.set_num_threads(threads)


def _log(out):
    return [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_tiny_coco(tmp_path_factory.mktemp("coco"), n_images=8)


COMMON = ["--config", "tiny", "--batch-size", "2", "--prompts-per-image", "2", "--workers", "0", "--threads", "1",
          "--save-every", "2", "--warmup-steps", "2"]


def test_train_writes_checkpoint_and_resumes_exactly(data_dir, tmp_path):
    from sam_lite import SamLiteModel, SamLitePredictor

    full, part = tmp_path / "full", tmp_path / "part"
    _train(["--data", data_dir, "--out", full, "--steps", 4, *COMMON])
    _train(["--data", data_dir, "--out", part, "--steps", 4, *COMMON, "--stop-after", 2])
    state = torch.load(part / "last" / "training_state.pt", weights_only=True)
    assert state["step"] == 2
    _train(["--data", data_dir, "--out", part, "--steps", 4, *COMMON, "--resume"])
    a, b = _log(full), _log(part)
    assert [r["step"] for r in b] == [1, 2, 3, 4]  # continued from the saved step, none repeated or skipped
    for ra, rb in zip(a, b):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-5), (ra, rb)
    for d in (full / "final", full / "last"):
        assert (d / "model.safetensors").is_file() and (d / "config.json").is_file()
    assert (full / "loss.png").stat().st_size > 0
    wa = SamLiteModel.from_pretrained(full / "final").state_dict()
    wb = SamLiteModel.from_pretrained(part / "final").state_dict()
    for k in wa:
        if k.endswith("k_proj.bias"):  # softmax ignores it: its gradient is float round-off that Adam amplifies
            continue
        torch.testing.assert_close(wa[k], wb[k], atol=1e-6, rtol=1e-5)
    SamLitePredictor.from_pretrained(full / "final")  # a training output is a predictor checkpoint


def test_fine_tuned_backbone_stages_train_at_a_scaled_learning_rate(data_dir, tmp_path):
    from sam_lite import SamLiteConfig, SamLiteModel
    from sam_lite.modeling.image_encoder import EfficientNetLite

    cfg = tmp_path / "ft.json"
    SamLiteConfig.from_preset("tiny", backbone_trainable_from=4, backbone_trainable_to=5).save(cfg)
    args = ["--data", data_dir, "--steps", 2, *COMMON, "--config", cfg, "--lr", "1e-3"]
    _train(["--out", tmp_path / "a", *args, "--backbone-lr-scale", "0.1"])
    _train(["--out", tmp_path / "b", *args, "--backbone-lr-scale", "0"])
    state = torch.load(tmp_path / "a" / "last" / "training_state.pt", weights_only=True)
    lrs = sorted({g["initial_lr"] for g in state["optimizer"]["param_groups"]})
    assert lrs == pytest.approx([1e-4, 1e-3])
    packaged = EfficientNetLite("lite0").load_pretrained_state_dict()
    for run, moved in (("a", True), ("b", False)):
        sd = SamLiteModel.from_pretrained(tmp_path / run / "final").image_encoder.backbone.state_dict()
        stage4 = [k for k in sd if k.startswith("_blocks.") and k.endswith("weight")
                  and "conv" in k and 8 <= int(k.split(".")[1]) <= 10]  # blocks 8-10 are stage 4
        assert stage4
        assert any(not torch.equal(sd[k], packaged[k]) for k in stage4) == moved, run
        assert all(torch.equal(sd[k], packaged[k]) for k in sd if k.startswith("_blocks.0."))  # frozen stage 0


def test_init_from_fine_tunes_with_new_modules_and_frozen_prefixes(data_dir, tmp_path, capsys):
    """--init-from: the checkpoint's config and weights, the geometric prompt encoder (absent from the text
    checkpoint) fresh; --freeze keeps the image encoder at the checkpoint's weights while the decoder moves."""
    from sam_lite import SamLiteModel

    base = ["--batch-size", "2", "--prompts-per-image", "2", "--workers", "0", "--threads", "1", "--save-every", "2",
            "--warmup-steps", "1", "--steps", "2", "--data", data_dir, "--lr", "1e-3"]
    _train([*base, "--config", "tiny", "--out", tmp_path / "text"])
    from sam_lite.config import InferenceConfig
    policy = InferenceConfig(score_threshold=0.3, presence_threshold=0.6)
    policy.save(tmp_path / "text" / "final" / "inference_config.json")
    _train([*base, "--init-from", tmp_path / "text" / "final", "--geometric-fraction", "0.5",
            "--freeze", "image_encoder.", "--out", tmp_path / "geo"])
    printed = capsys.readouterr().out
    assert "fresh: [" in printed and "prompt_encoder.type_embed" in printed
    a = SamLiteModel.from_pretrained(tmp_path / "text" / "final")
    b = SamLiteModel.from_pretrained(tmp_path / "geo" / "final")
    assert b.config.geometric_prompts and not a.config.geometric_prompts
    for d in ("final", "last"):  # the fine-tune keeps the post-processing policy it started from
        assert InferenceConfig.load(tmp_path / "geo" / d).score_threshold == 0.3
    assert a.config.d_model == b.config.d_model  # the checkpoint's config, not the default preset
    sa, sb = a.state_dict(), b.state_dict()
    enc = [k for k in a.trainable_state_dict() if k.startswith("image_encoder.")]
    assert enc and all(torch.equal(sa[k], sb[k]) for k in enc)
    dec = [k for k in sa if k.startswith("decoder.layers.") and k.endswith("weight")]
    assert any(not torch.equal(sa[k], sb[k]) for k in dec)


@pytest.mark.parametrize("extra, message", [(["--init-from", "/no/such/dir"], "not a checkpoint directory"),
                                            (["--freeze", "no_such_module."], "matches no parameter"),
                                            (["--resume"], "no checkpoint in"),
                                            (["--steps", "2", "--minutes", "3"], "exactly one of"),
                                            (["--scale-range", "2", "1"], "--scale-range"),
                                            (["--config", "no-such-preset"], "unknown config preset"),
                                            (["--split", "all", "train"], "--split needs one value")])
def test_bad_options_are_one_clear_error(data_dir, tmp_path, capsys, extra, message):
    args = ["--data", data_dir, "--out", tmp_path / "x", *COMMON, *extra]
    if "--minutes" not in extra:
        args += ["--steps", "1"]
    with pytest.raises(SystemExit) as e:
        _train(args)
    said = f"{e.value.code} {capsys.readouterr().err}"
    assert e.value.code != 0 and message in said, said
    assert not (tmp_path / "x" / "final").exists()


def test_bad_data_is_one_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="annotation file not found"):
        _train(["--data", tmp_path / "nowhere", "--out", tmp_path / "x", "--steps", "1", *COMMON])


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_ddp_two_processes(data_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "scripts/train.py", "--data", str(data_dir), "--out", str(out), "--steps", "2", *map(str, COMMON)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert [x["step"] for x in _log(out)] == [1, 2]  # one log, written by rank 0
    assert (out / "final" / "model.safetensors").is_file()


def test_baseline_trains_with_the_same_loop(data_dir, tmp_path):
    from sam_lite.baseline import ClipSegBaseline

    cfg = tmp_path / "baseline.json"
    cfg.write_text(json.dumps({"image_size": 64, "d_model": 16}))
    out = tmp_path / "baseline"
    _train(["--model", "clipseg_baseline", "--config", cfg, "--data", data_dir, "--out", out, "--steps", 2,
            "--batch-size", "2", "--workers", "0", "--threads", "1"])
    assert [r["step"] for r in _log(out)] == [1, 2]
    assert ClipSegBaseline.from_pretrained(out / "final").config.image_size == 64


def test_sigkill_mid_training_then_resume(data_dir, tmp_path):
    """Kill -9 a run that saves every step (so the kill usually lands inside a save); the checkpoint left behind
    loads, and --resume continues from its step with a log that has each step once."""
    import signal
    import time

    from sam_lite import SamLiteModel
    from sam_lite.training.checkpointing import STATE_NAME, find_resume_dir

    out = tmp_path / "killed"
    args = ["--data", data_dir, "--out", out, "--steps", 200, *COMMON]
    args[args.index("--save-every") + 1] = "1"
    proc = subprocess.Popen([sys.executable, "scripts/train.py", *map(str, args)], cwd=ROOT,  # the script, killed
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if (out / "log.jsonl").is_file() and len((out / "log.jsonl").read_text().splitlines()) >= 5:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"training ended before it could be killed: {proc.stderr.read()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "final").exists()
    resume_dir = find_resume_dir(out)
    assert resume_dir is not None
    SamLiteModel.from_pretrained(resume_dir)  # not torn: config and weights load and match
    saved = torch.load(resume_dir / STATE_NAME, weights_only=True)["step"]
    assert saved >= 4
    _train(["--data", data_dir, "--out", out, "--steps", 200, *COMMON, "--resume", "--stop-after", saved + 2])
    steps = [r["step"] for r in _log(out)]
    assert steps == list(range(1, saved + 3))  # continued from the saved step; nothing repeated or lost
    assert torch.load(out / "last" / STATE_NAME, weights_only=True)["step"] == saved + 2


def test_fine_tuning_keeps_the_concept_vocabulary_and_adds_the_new_names(data_dir, tmp_path, capsys):
    """--init-from on a dataset with a new concept: the concept map keeps the checkpoint's names and appends the new
    one (its dense labels index the grown vocabulary), so the old concepts stay promptable."""
    from sam_lite import SamLiteModel
    from sam_lite.data import CocoConcepts, ConceptSegmentationDataset

    base = ["--batch-size", "2", "--prompts-per-image", "2", "--workers", "0", "--threads", "1", "--save-every", "2",
            "--warmup-steps", "1", "--steps", "1"]
    _train([*base, "--data", data_dir, "--config", "tiny", "--out", tmp_path / "old"])
    old = SamLiteModel.from_pretrained(tmp_path / "old" / "final").config.concept_names
    new_data = write_tiny_coco(tmp_path / "balloons", n_images=6)
    ann = json.loads((new_data / "annotations.json").read_text())
    ann["categories"][1]["name"] = "balloon"  # the round things are balloons now
    (new_data / "annotations.json").write_text(json.dumps(ann))
    capsys.readouterr()
    _train([*base, "--data", new_data, "--init-from", tmp_path / "old" / "final", "--out", tmp_path / "new"])
    assert f"concepts: {len(old)} from the checkpoint + 1 new: balloon" in capsys.readouterr().out
    grown = SamLiteModel.from_pretrained(tmp_path / "new" / "final").config.concept_names
    assert grown == old + ["balloon"] and "sports ball" in old
    coco = CocoConcepts(new_data)
    item = ConceptSegmentationDataset(coco, coco.image_ids, 64, vocabulary=grown, augment=False)[0]
    assert item["dense_allowed"].shape == (len(grown) + 1,)
    labelled = item["dense_labels"][item["dense_labels"] >= 0].unique().tolist()
    assert grown.index("balloon") in labelled and grown.index("sports ball") not in labelled
    with pytest.raises(ValueError, match="lacks the dataset's concepts"):
        ConceptSegmentationDataset(coco, coco.image_ids, 64, vocabulary=old)


def test_two_datasets_train_together_with_mixing_weights(data_dir, tmp_path):
    """--data NEW OLD --data-weights: a replay mixture; every dataset's concepts in the concept map, batches drawn
    from both in proportion, bad weights one clear error."""
    from sam_lite import SamLiteModel
    from sam_lite.data import CocoConcepts, ConceptSegmentationDataset, DatasetMixture

    new_data = write_tiny_coco(tmp_path / "balloons", n_images=6, seed=3)
    ann = json.loads((new_data / "annotations.json").read_text())
    ann["categories"][1]["name"] = "balloon"
    (new_data / "annotations.json").write_text(json.dumps(ann))
    _train(["--data", new_data, data_dir, "--data-weights", "0.5", "0.5", "--out", tmp_path / "mix", "--steps", 2,
            *COMMON])
    names = SamLiteModel.from_pretrained(tmp_path / "mix" / "final").config.concept_names
    assert "balloon" in names and "sports ball" in names
    a, b = CocoConcepts(new_data), CocoConcepts(data_dir)
    mix = DatasetMixture([ConceptSegmentationDataset(c, c.image_ids, 64, vocabulary=names) for c in (a, b)],
                         [3.0, 1.0])
    assert len(mix) == len(a.image_ids) + len(b.image_ids) and mix.locate(len(a.image_ids)) == (1, 0)
    w = mix.sample_weights([[1.0] * len(a.image_ids), [1.0] * len(b.image_ids)])
    assert sum(w[:len(a.image_ids)]) == pytest.approx(0.75) and sum(w) == pytest.approx(1.0)
    assert mix[(len(a.image_ids), 0)]["image_id"] == b.image_ids[0]
    with pytest.raises(SystemExit):
        _train(["--data", new_data, data_dir, "--data-weights", "1", "--out", tmp_path / "x", "--steps", 1, *COMMON])


def test_split_all_trains_on_the_photos_the_hash_split_holds_out(tmp_path, capsys):
    """A dataset whose photos all fall in the id-hash 'val' split: --split train has nothing to train on (a clear
    error), --split all trains on every photo (a dataset with its validation photos in another folder)."""
    import zlib

    from sam_lite.data import CocoConcepts

    data = write_tiny_coco(tmp_path / "held-out", n_images=3, seed=5)
    ann = json.loads((data / "annotations.json").read_text())
    val_ids = iter(i for i in range(1, 10 ** 6) if zlib.crc32(str(i).encode()) % 100 < 15)
    new_id = {im["id"]: next(val_ids) for im in ann["images"]}
    for im in ann["images"]:
        im["id"] = new_id[im["id"]]
    for a in ann["annotations"]:
        a["image_id"] = new_id[a["image_id"]]
    (data / "annotations.json").write_text(json.dumps(ann))
    assert CocoConcepts(data).split("train") == []
    with pytest.raises((SystemExit, ValueError), match="no images to train on"):
        _train(["--data", data, "--out", tmp_path / "a", "--steps", 1, *COMMON])
    _train(["--data", data, "--split", "all", "--out", tmp_path / "b", "--steps", 1, *COMMON])
    assert (tmp_path / "b" / "final" / "model.safetensors").is_file()
