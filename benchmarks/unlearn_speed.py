"""E2URec unlearning speed: the reference code's way against ours, side by side.

Both run in this one process on the same data, model, LoRA initialisation and
batches. The reference style recomputes every teacher each step, computes
vocabulary logits at every position, and sends the retain batch through the
student twice (once for the labels, once for distillation), and passes the
labels to every forward as the reference does, so the library also computes
its label loss over the vocabulary at every position. Ours is the
library's E2URec loss: teachers cached once per sample, the retain batch
through the student once, logits only at the answer positions. Both must give
the same loss on the first step (to 1e-5), so the speed-up changes nothing
in the method.

    python -m benchmarks.unlearn_speed --model tiny-llama
    python -m benchmarks.unlearn_speed --model smollm2-135m --steps 2 --epochs 2
"""

from __future__ import annotations

import argparse
import copy
import sys
import time

import torch

from benchmarks.common import (
    add_common_args,
    device_of,
    prepared_data,
    print_table,
    sync,
)
from e2urec.backbones.registry import create_backbone
from e2urec.backbones.scoring import MODEL_INPUTS
from e2urec.config import BackboneConfig, LoraConfig
from e2urec.data.samples import read_split
from e2urec.methods.accounting import PeakMemory
from e2urec.training.distillation import base_logits, distillation_loss, forget_teacher_fn
from e2urec.training.loop import add_lora
from e2urec.training.losses import forgetting_teacher, soft_ce
from e2urec.training.teachers import TeacherCache

TINY = {"tiny_hidden": 128, "tiny_layers": 2, "tiny_heads": 4, "tiny_intermediate": 256}


def switch_off_dropout(model: torch.nn.Module) -> None:
    """Dropout would make the two first steps differ: modules and functional rates alike."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for name in ("dropout", "attention_dropout"):  # T5/Llama attention call F.dropout
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.0)


def reference_forward(model: torch.nn.Module, batch: dict[str, torch.Tensor]
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """As the reference code: ``model(input_ids, labels=...)``, so every forward also pays
    for the library's label loss, and vocabulary logits come at every position.

    Returns the answer slots' logits and that label loss (the mean answer-token CE).
    """
    inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
    labels = batch["answer_ids"].masked_fill(~batch["answer_mask"], -100)
    if "decoder_input_ids" in inputs:
        out = model(**inputs, labels=labels, use_cache=False)
        return out.logits, out.loss
    width = labels.shape[1]
    # Causal: the last ``width`` positions predict the answer; given as already-shifted labels.
    shifted = torch.full_like(inputs["input_ids"], -100)
    shifted[:, -width:] = labels
    out = model(**inputs, labels=shifted, shift_labels=shifted, use_cache=False)
    return out.logits[:, -width:], out.loss


def reference_step(student, original, augmented, forget_batch, retain_batch, alpha, beta):
    """One joint step as the reference code takes it (its ``compute_forced_kl``,
    ``get_answer_loss`` and ``compute_kl``): five forwards, three of them teachers."""
    mask_f, mask_r = forget_batch["answer_mask"], retain_batch["answer_mask"]
    with torch.no_grad():
        teacher = forgetting_teacher(reference_forward(original, forget_batch)[0],
                                     reference_forward(augmented, forget_batch)[0], alpha)
        remember = reference_forward(original, retain_batch)[0]
    l_forget = soft_ce(reference_forward(student, forget_batch)[0], teacher, mask_f)
    l_ce = reference_forward(student, retain_batch)[1]
    l_remember = soft_ce(reference_forward(student, retain_batch)[0], remember, mask_r)
    return beta * l_forget + (1 - beta) * (l_remember + l_ce)


def run(args: argparse.Namespace) -> float:
    device = device_of(args)
    data = prepared_data(args)
    config = BackboneConfig(name=args.model, **(TINY if args.model.startswith("tiny-") else {}))
    original = create_backbone(config, data, seed=args.seed)
    augmented = copy.deepcopy(original.model).to(device).eval()
    with torch.no_grad():  # a stand-in for "fine-tuned on forget": its logits differ
        generator = torch.Generator().manual_seed(args.seed)
        for param in augmented.parameters():
            param.add_(0.02 * param.std().nan_to_num() *
                       torch.randn(param.shape, generator=generator).to(device))
    n = args.steps * args.batch_size
    forget, retain = read_split(data, "forget")[:n], read_split(data, "retain")[:n]
    encoder = original.encoder()
    forget_f, retain_f = encoder.encode(forget), encoder.encode(retain)
    batches = [(encoder.collate(forget_f[i:i + args.batch_size]),
                encoder.collate(retain_f[i:i + args.batch_size])) for i in range(0, n,
                                                                         args.batch_size)]
    batches = [tuple({k: v.to(device) for k, v in b.items()} for b in pair) for pair in batches]
    lora = LoraConfig(r=args.lora_r, alpha=2 * args.lora_r, dropout=0.0, targets=["q", "v"])

    def student():
        torch.manual_seed(args.seed)
        model = add_lora(copy.deepcopy(original), lora).model.to(device)
        switch_off_dropout(model)
        return model.train(), torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=1e-3)

    ref_student, ref_opt = student()
    ref_original = copy.deepcopy(original.model).to(device).eval()

    def ref_loss(fb, rb):
        return reference_step(ref_student, ref_original, augmented, fb, rb, args.alpha, args.beta)

    ours_student, ours_opt = student()
    def original(batch):  # the student's base with its adapters off
        return base_logits(ours_student, batch)

    forget_cache = TeacherCache(encoder, forget_f, forget_teacher_fn(
        original, augmented, args.alpha), device)
    retain_cache = TeacherCache(encoder, retain_f, original, device)
    ours = distillation_loss(forget_cache, retain_cache, args.beta)

    def ours_loss(fb, rb):
        return ours(ours_student, fb, rb)[0]

    results = {}
    for name, loss_fn, opt in (("reference", ref_loss, ref_opt), ("ours", ours_loss, ours_opt)):
        losses, step_times = [], []
        with PeakMemory() as memory:
            sync(device)
            start = time.perf_counter()
            for _ in range(args.epochs):
                for forget_batch, retain_batch in batches:
                    t0 = time.perf_counter()
                    loss = loss_fn(forget_batch, retain_batch)
                    loss.backward()
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                    sync(device)
                    losses.append(loss.item())
                    step_times.append(time.perf_counter() - t0)
                    print(f"  {name} step {len(losses)}: {step_times[-1]:.2f} s, "
                          f"loss {losses[-1]:.6f}", file=sys.stderr, flush=True)
            total = time.perf_counter() - start
        later = step_times[len(batches):] or step_times
        results[name] = {"total": total, "step": sum(step_times) / len(step_times),
                         "first_epoch": sum(step_times[:len(batches)]) / len(batches),
                         "later": sum(later) / len(later),
                         "first_loss": losses[0], "last_loss": losses[-1],
                         "memory": memory.peak_mb}

    ref, our = results["reference"], results["ours"]
    gap = abs(ref["first_loss"] - our["first_loss"])
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"model {args.model}, device {device_name}, {args.epochs} epochs x {args.steps} "
          f"joint steps, batch {args.batch_size}, LoRA r {args.lora_r} on q/v")
    print_table(["implementation", "s/step", "epoch 1 s/step", "later s/step", "total s",
                 "peak MB", "first loss", "last loss"],
                [[k, f"{v['step']:.3f}", f"{v['first_epoch']:.3f}", f"{v['later']:.3f}",
                  f"{v['total']:.2f}", f"{v['memory']:.0f}",
                  f"{v['first_loss']:.6f}", f"{v['last_loss']:.6f}"]
                 for k, v in results.items()])
    print(f"first-step loss difference: {gap:.2e} ({'ok' if gap <= 1e-5 else 'MISMATCH'})")
    speedup = ref["total"] / our["total"]
    print(f"speedup: {speedup:.2f}")
    if gap > 1e-5:
        raise SystemExit("the two implementations disagree on the first step")
    return speedup


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=4, help="joint steps per epoch")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--alpha", type=float, default=2.0)
    parser.add_argument("--beta", type=float, default=0.4)
    add_common_args(parser)
    return parser


def main(argv=None) -> None:
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
