"""Train sam-lite (or the CLIPSeg-style baseline) on a COCO-format dataset. Read top to bottom.

    python scripts/train.py --data ../shared/data/coco_mini --config base --minutes 30 --out runs/base
    torchrun --nproc_per_node 2 scripts/train.py ...   # DistributedDataParallel: gloo on CPU, nccl on CUDA
    python scripts/train.py --device cuda ...          # --device auto|cpu|cuda|mps (auto: CUDA, MPS, CPU)

AdamW with linear warm-up and cosine decay, bf16 autocast (opt-in on CPU, default on CUDA), a JSONL log and a loss
plot, checkpoints written atomically every ``--save-every`` steps and at the end; ``--resume`` continues exactly (step,
optimiser, scheduler, data order, RNG; on CUDA the GPU's RNG is not restored). On CUDA the loader pins memory and
runs 4 workers by default.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data import CocoConcepts, ConceptSegmentationDataset, DatasetMixture, collate
from ..device import add_device_argument, resolve_device
from ..registry import MODEL_FAMILIES, model_family
from .checkpointing import (copy_inference_config, find_resume_dir, init_from_checkpoint, load_resume_state,
                            save_checkpoint, trim_log)
from .loop import move_batch, plot_log, train_step
from .sampling import EpochBatchSampler, lr_factor


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="sam-lite train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", nargs="+", default=["../shared/data/coco_mini"], metavar="DIR",
                   help="COCO-format dataset directory; several: train on all of them (e.g. new photos and a replay "
                        "of the original data, so a fine-tune does not forget), mixed by --data-weights")
    p.add_argument("--data-weights", type=float, nargs="+", default=None, metavar="W",
                   help="with several --data: the share of each epoch's photos drawn from each (default: equal)")
    p.add_argument("--split", nargs="+", choices=["train", "all"], default=["train"], metavar="SPLIT",
                   help="which photos of each --data to train on (one value, or one per --data): train leaves out the "
                        "~15 %% 'val' photos chosen by image id; all takes every photo (a dataset whose validation "
                        "photos are in another folder, e.g. balloon's train/ and val/)")
    p.add_argument("--config", default=None,
                   help="preset name (tiny, small, base) or a config.json path; default: base, or the --init-from "
                        "checkpoint's config")
    p.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                   help="fine-tune: start from the weights of a save_pretrained directory (modules it lacks, e.g. "
                        "the geometric prompt encoder, start fresh); the schedule starts at step 0")
    p.add_argument("--freeze", nargs="+", default=(), metavar="PREFIX",
                   help="parameter-name prefixes kept fixed, e.g. image_encoder. (fine-tune the decoder only)")
    p.add_argument("--model", default="sam_lite", choices=sorted(MODEL_FAMILIES), help="model type (registry)")
    p.add_argument("--minutes", type=float, default=None, help="training time budget (sets the step count)")
    p.add_argument("--epochs", type=float, default=None, help="passes over the training images")
    p.add_argument("--steps", type=int, default=None, help="exact number of optimiser steps")
    p.add_argument("--batch-size", type=int, default=16, help="images per step (per process)")
    p.add_argument("--prompts-per-image", type=int, default=4)
    p.add_argument("--match-loss-on-negatives", choices=["on", "off"], default="on",
                   help="off: queries of absent-concept prompts get no match loss, presence alone learns absence")
    p.add_argument("--scale-range", type=float, nargs=2, default=(0.3, 1.6), metavar=("MIN", "MAX"),
                   help="large-scale jitter: resize factor range relative to the model's input size")
    p.add_argument("--backbone", choices=["lite0", "lite2"], default=None, help="override the config's backbone")
    p.add_argument("--sampling", choices=["mask-weighted", "labelled", "uniform"], default="mask-weighted",
                   help="photos that label few categories (person-only) are drawn less often "
                        "(CocoConcepts.sample_weight): mask-weighted counts the categories labelled at box level for "
                        "half the weight and at mask level for the other half (a photo labelled by boxes alone "
                        "weighs 0.5); labelled: box level only (the sampling of the shipped checkpoint's run); "
                        "uniform: every photo once per epoch")
    p.add_argument("--partial-labels", choices=["on", "off"], default="on",
                   help="off: ignore the LVIS fields, every photo counts as exhaustively labelled (an ablation)")
    p.add_argument("--box-labels", choices=["on", "off", "masked-photos"], default="on",
                   help="off: ignore what is known at box level only (box-only instances and the box-level LVIS "
                        "fields): train on the mask level alone; masked-photos: box labels on, but only on the "
                        "photos with some masks (the photos labelled by boxes alone left out); both ablations")
    p.add_argument("--geometric-fraction", type=float, default=0.0,
                   help="share of the prompts that are geometric (a point, a box or an exemplar box sampled from the "
                        "instance masks); > 0 turns on the config's geometric_prompts")
    p.add_argument("--geometry-prior", choices=["on", "off"], default="on",
                   help="with --geometric-fraction: also draw the visual prompt as dense maps (config "
                        "geometry_prior; off: prompt tokens only, an ablation)")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--backbone-lr-scale", type=float, default=0.1,
                   help="learning rate of fine-tuned backbone stages relative to --lr (DETR: 0.1)")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-steps", type=int, default=50)
    p.add_argument("--out", default="runs/sam-lite", help="output directory (checkpoints, log, plot)")
    p.add_argument("--resume", action="store_true", help="continue from --out/last")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=200, help="steps between checkpoints")
    p.add_argument("--workers", type=int, default=None, help="data loader processes (default: 4 on CUDA, else 1)")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast (default: on with CUDA, off elsewhere; measured slower than fp32 on this CPU: "
                        "27 s vs 13 s per step)")
    add_device_argument(p, help_extra="; under torchrun each process takes cuda:LOCAL_RANK")
    p.add_argument("--max-images", type=int, default=None, help="use only the first N training images")
    p.add_argument("--threads", type=int, default=None, help="torch threads per process")
    p.add_argument("--stop-after", type=int, default=None,
                   help="stop (after saving) at this step without ending the schedule, e.g. to test --resume")
    args = p.parse_args(argv)
    if sum(x is not None for x in (args.minutes, args.epochs, args.steps)) != 1:
        p.error("give exactly one of --minutes, --epochs, --steps")
    if args.batch_size < 1 or args.prompts_per_image < 1:
        p.error("--batch-size and --prompts-per-image must be >= 1")
    if args.backbone_lr_scale < 0:
        p.error(f"--backbone-lr-scale must be >= 0, got {args.backbone_lr_scale}")
    if not 0.0 <= args.geometric_fraction <= 1.0:
        p.error(f"--geometric-fraction must be in [0, 1], got {args.geometric_fraction}")
    if args.geometric_fraction > 0 and args.model != "sam_lite":
        p.error("--geometric-fraction needs --model sam_lite")
    if args.warmup_steps < 1 or args.save_every < 1:
        p.error("--warmup-steps and --save-every must be >= 1")
    if len(args.split) not in (1, len(args.data)):
        p.error(f"--split needs one value or one per --data directory ({len(args.data)}), got {len(args.split)}")
    if args.data_weights is not None and len(args.data_weights) != len(args.data):
        p.error(f"--data-weights needs one weight per --data directory ({len(args.data)}), "
                f"got {len(args.data_weights)}")
    if args.data_weights is not None and (min(args.data_weights) < 0 or not sum(args.data_weights) > 0):
        p.error("--data-weights must be >= 0 and not all 0")
    if not 0 < args.scale_range[0] <= args.scale_range[1]:
        p.error(f"--scale-range needs 0 < MIN <= MAX, got {args.scale_range}")
    if args.init_from is not None:
        if args.model != "sam_lite":
            p.error("--init-from needs --model sam_lite")
        if not (Path(args.init_from) / "config.json").is_file():
            p.error(f"--init-from: {args.init_from} is not a checkpoint directory (no config.json)")
    if args.config is None:
        args.config = str(Path(args.init_from) / "config.json") if args.init_from else "base"
    return args


def build_model(args: argparse.Namespace, vocabulary: list[str] | None = None):
    """The model of ``args.model`` from ``args.config`` (a preset name or a config.json path). sam-lite: the concept
    map's softmax runs over the dataset's own concepts; a fine-tune (``--init-from``) keeps the checkpoint's concept
    names and adds the dataset's new ones (the map's weights do not depend on the vocabulary, only its name
    embeddings do); ``--backbone`` overrides the config's, and a geometric fraction > 0 turns on the visual-prompt
    modules. Returns (model, the concept names the fine-tune added to the config's)."""
    family = model_family(args.model)
    config_class = family.config_class
    if args.config.endswith(".json"):
        cfg = config_class.load(args.config)
    elif hasattr(config_class, "from_preset"):
        cfg = config_class.from_preset(args.config)
    elif args.config in ("base", "default"):
        cfg = config_class()
    else:
        raise ValueError(f"--config {args.config!r}: {args.model} has no presets; give a config.json path")
    added: list[str] = []
    if args.model == "sam_lite":
        if cfg.concept_map and vocabulary:
            known = list(cfg.concept_names) if getattr(args, "init_from", None) else []
            cfg.concept_names = list(dict.fromkeys(known + list(vocabulary)))
            added = cfg.concept_names[len(dict.fromkeys(known)):]
        if args.backbone:
            cfg.backbone = args.backbone
        if getattr(args, "geometric_fraction", 0.0) > 0:
            cfg.geometric_prompts = True  # geometric training prompts need the prompt encoder and the IoU head
            cfg.geometry_prior = args.geometry_prior == "on"
        cfg.validate()
    return family.model_class(cfg), added


def training_device(name: str, distributed: bool) -> torch.device:
    """--device, resolved; under torchrun a CUDA run puts each process on ``cuda:LOCAL_RANK`` (SystemExit with one
    line when this machine lacks the device)."""
    try:
        device = resolve_device(name)
        if device.type == "cuda" and distributed:
            device = resolve_device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    if device.type == "cuda":
        if device.index is None:  # set_device and DDP's device_ids want an index
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    return device


def main(argv=None) -> Path:
    args = parse_args(argv)
    distributed = "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
    device = training_device(args.device, distributed)
    cuda = device.type == "cuda"
    bf16 = cuda if args.bf16 is None else args.bf16
    workers = (4 if cuda else 1) if args.workers is None else args.workers
    if distributed:
        dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if args.threads or distributed:
        torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 2) // world))
    torch.manual_seed(args.seed + rank)
    random.seed(args.seed + rank)
    out = Path(args.out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)

    # --- data ---
    try:
        cocos = [CocoConcepts(d, partial_labels=args.partial_labels == "on", box_labels=args.box_labels != "off")
                 for d in args.data]
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: --data: {e}") from None
    split_names = args.split * len(cocos) if len(args.split) == 1 else args.split
    splits = [coco.split(name) for coco, name in zip(cocos, split_names)]
    if args.box_labels == "masked-photos":
        splits = [[i for i in ids if coco.has_masks(i)] for coco, ids in zip(cocos, splits)]
    splits = [ids[: args.max_images] for ids in splits]
    try:
        core, new_names = build_model(args, list(dict.fromkeys(n for coco in cocos for n in coco.vocabulary)))
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: --config: {e}") from None
    try:
        datasets = [ConceptSegmentationDataset(coco, ids, core.config.image_size,
                                               prompts_per_image=args.prompts_per_image, seed=args.seed,
                                               scale_range=tuple(args.scale_range),
                                               geometric_fraction=args.geometric_fraction,
                                               vocabulary=getattr(core.config, "concept_names", None) or None)
                    for coco, ids in zip(cocos, splits)]
    except ValueError as e:
        raise SystemExit(f"error: --data {' '.join(args.data)}: {e}") from None
    weighted = args.sampling != "uniform"
    share = 0.5 if args.sampling == "mask-weighted" else 0.0
    weights = [[coco.sample_weight(i, share) if weighted else 1.0 for i in ids] for coco, ids in zip(cocos, splits)]
    if len(datasets) == 1:
        dataset, sample_weights = datasets[0], (weights[0] if weighted else None)
    else:  # one index over every dataset; each epoch draws each dataset's share
        dataset = DatasetMixture(datasets, args.data_weights)
        sample_weights = dataset.sample_weights(weights)
    n_epoch = max(1, round(sum(sum(w) for w in weights))) if weighted else len(dataset)
    if len(datasets) > 1:  # an epoch small enough that every dataset can give its share without repeating a photo
        n_epoch = max(1, int(min(len(d) / share for d, share in zip(datasets, dataset.weights) if share > 0)))
    per_epoch = max(1, n_epoch // (args.batch_size * world))

    # --- model, objective, optimiser, schedule ---
    if args.init_from is not None:
        try:
            fresh = init_from_checkpoint(core, args.init_from)
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
        if rank == 0:
            print(f"init from {args.init_from}; fresh: {sorted({k.rsplit('.', 1)[0] for k in fresh}) or 'none'}")
            names = getattr(core.config, "concept_names", None) or []
            if names:
                print(f"concepts: {len(names) - len(new_names)} from the checkpoint + {len(new_names)} new"
                      f"{': ' + ', '.join(new_names[:10]) if new_names else ''}")
    frozen = [p for n, p in core.named_parameters() if n.startswith(tuple(args.freeze))]
    if args.freeze and not frozen:
        raise SystemExit(f"error: --freeze {' '.join(args.freeze)} matches no parameter name")
    for p in frozen:
        p.requires_grad_(False)
    core.to(device)
    objective = model_family(args.model).objective_class(
        core, match_loss_on_negatives=args.match_loss_on_negatives == "on")
    optimizer = core.configure_optimizers(args.weight_decay, args.lr, args.backbone_lr_scale)
    step, epoch, batch_in_epoch = 0, 0, 0
    total_steps = args.steps if args.steps is not None else (
        max(1, round(args.epochs * per_epoch)) if args.epochs is not None else None)
    resume_dir = find_resume_dir(out) if args.resume else None
    if args.resume and resume_dir is None:
        raise SystemExit(f"error: --resume: no checkpoint in {out}/last to resume from")
    if resume_dir is not None:
        state = load_resume_state(resume_dir, core, optimizer)
        step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        total_steps = args.steps if args.steps is not None else state["total_steps"]
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, args.warmup_steps, total_steps or 10 ** 9))
    if resume_dir is not None:
        scheduler.load_state_dict(state["scheduler"])
        # building LambdaLR applied lr(0); the saved run was at lr(step)
        for group, lr in zip(optimizer.param_groups, scheduler.get_last_lr()):
            group["lr"] = lr
    model = (DistributedDataParallel(core, device_ids=[device.index] if cuda else None) if distributed else core)
    model.train()

    # --- the loop ---
    if rank == 0 and resume_dir is not None:
        trim_log(out / "log.jsonl", step)
    log = open(out / "log.jsonl", "a") if rank == 0 else None
    t_start, deadline, start_step = time.time(), None, step
    if args.minutes is not None and total_steps is None:
        deadline = t_start + args.minutes * 60
    bar = tqdm(total=total_steps, initial=step, disable=rank != 0, dynamic_ncols=True, desc="train")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    sampler = EpochBatchSampler(len(dataset), args.batch_size, per_epoch, args.seed, rank, world, epoch,
                                batch_in_epoch, sample_weights)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers,
                        prefetch_factor=4 if workers else None, pin_memory=cuda)
    for batch in loader:
        if total_steps is not None and step >= total_steps:
            break
        t0 = time.time()
        batch = move_batch(batch, device)
        losses = train_step(model, core, objective, batch, optimizer, scheduler, autocast)
        step += 1
        epoch, batch_in_epoch = divmod(sampler.start + step - start_step, per_epoch)
        dt = time.time() - t0
        if deadline is not None and total_steps is None and step >= 20:
            # the step budget is fixed once, from the measured speed, so the schedule and --resume are exact
            rate = (step - start_step) / (time.time() - t_start)
            total_steps = max(step + 1, int(rate * args.minutes * 60))
            bar.total = total_steps
            scheduler.lr_lambdas[0] = lambda s, T=total_steps: lr_factor(s, args.warmup_steps, T)
        if rank == 0:
            rec = {"step": step, "epoch": epoch, "lr": scheduler.get_last_lr()[0],
                   "img_per_s": round(len(batch["images"]) * world / dt, 2), "time": round(time.time() - t_start, 2),
                   **{k: round(v.item(), 5) for k, v in losses.items() if not k[-1].isdigit()}}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            bar.set_postfix(loss=f"{rec['loss']:.3f}", img_s=f"{rec['img_per_s']:.1f}")
            bar.update(1)
        finished = total_steps is not None and step >= total_steps
        interrupted = args.stop_after is not None and step >= args.stop_after
        if rank == 0 and (step % args.save_every == 0 or finished or interrupted):
            save_checkpoint(out, core, optimizer, scheduler, step, total_steps or 0, epoch, batch_in_epoch, args)
        if finished or interrupted:
            break
    bar.close()
    if rank == 0:
        log.close()
        core.save_pretrained(out / "final")
        copy_inference_config(args.init_from, out / "final")
        plot_log(out / "log.jsonl", out / "loss.png")
        print(f"trained {step} steps in {(time.time() - t_start) / 60:.1f} min -> {out / 'final'}")
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return out / "final"


if __name__ == "__main__":
    main(sys.argv[1:])
