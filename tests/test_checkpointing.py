"""Training checkpoints without training: atomic save, the resume directory after a kill, the log trimmed to the
saved step."""

import json
import random
from types import SimpleNamespace

import torch
from torch import nn

from sam_lite.training.checkpointing import STATE_NAME, find_resume_dir, load_resume_state, save_checkpoint, trim_log


class Tiny(nn.Linear):
    """An nn.Linear with the save_pretrained interface the checkpoint needs."""

    def save_pretrained(self, directory):
        from safetensors.torch import save_file

        directory.mkdir(parents=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(directory / "model.safetensors"))


def _setup(lr_at=lambda s: 1.0 / (s + 1)):
    model = Tiny(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    return model, opt, sched


def test_save_then_resume_restores_weights_optimiser_and_rng(tmp_path):
    model, opt, sched = _setup()
    for _ in range(3):
        model(torch.randn(4, 3)).sum().backward()
        opt.step()
        sched.step()
    torch.manual_seed(7)
    random.seed(7)
    save_checkpoint(tmp_path, model, opt, sched, step=3, total_steps=10, epoch=1, batch_in_epoch=2,
                    args=SimpleNamespace(lr=0.1))
    expected_torch, expected_py = torch.rand(2), random.random()
    assert find_resume_dir(tmp_path) == tmp_path / "last" and not (tmp_path / "last.tmp").exists()

    fresh, opt2, _ = _setup()
    state = load_resume_state(tmp_path / "last", fresh, opt2)
    assert (state["step"], state["total_steps"], state["epoch"], state["batch_in_epoch"]) == (3, 10, 1, 2)
    assert json.loads(state["args"]) == {"lr": 0.1}
    assert torch.equal(fresh.weight, model.weight)
    assert opt2.state_dict()["state"][0]["step"] == 3
    assert torch.equal(torch.rand(2), expected_torch) and random.random() == expected_py
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda s: 1.0 / (s + 1))
    sched2.load_state_dict(state["scheduler"])
    assert sched2.last_epoch == 3 and sched2.get_last_lr() == [0.1 / 4]  # the schedule at lr(3)


def test_a_second_save_replaces_last_and_a_kill_between_renames_leaves_last_old(tmp_path):
    model, opt, sched = _setup()
    args = SimpleNamespace()
    save_checkpoint(tmp_path, model, opt, sched, 1, 5, 0, 1, args)
    save_checkpoint(tmp_path, model, opt, sched, 2, 5, 0, 2, args)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    assert torch.load(tmp_path / "last" / STATE_NAME, weights_only=True)["step"] == 2
    (tmp_path / "last").rename(tmp_path / "last.old")  # killed after last -> last.old, before last.tmp -> last
    (tmp_path / "last.tmp").mkdir()  # and a half-written next save
    assert find_resume_dir(tmp_path) == tmp_path / "last.old"
    save_checkpoint(tmp_path, model, opt, sched, 3, 5, 0, 3, args)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]  # the stale temp and the old copy cleaned up
    assert torch.load(find_resume_dir(tmp_path) / STATE_NAME, weights_only=True)["step"] == 3
    assert find_resume_dir(tmp_path / "nothing") is None


def test_trim_log_keeps_saved_steps_and_drops_torn_lines(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (1, 2, 3, 4)) + '{"step": 5, "lo')
    trim_log(log, 2)
    assert [json.loads(x)["step"] for x in log.read_text().splitlines()] == [1, 2]
    trim_log(tmp_path / "absent.jsonl", 2)  # no log yet: nothing to do
    assert not (tmp_path / "absent.jsonl").exists()
