"""Shared machinery of the methods that fine-tune a full copy of the Original."""

from __future__ import annotations

from typing import Any

from e2urec.backbones.scoring import answer_logits
from e2urec.methods.base import Unlearner
from e2urec.training.checkpoints import load_model, save_model
from e2urec.training.loop import loader
from e2urec.training.losses import answer_ce
from e2urec.training.unlearn_loop import LoopOptions, LossFn, run_unlearning


def unlearn_full_copy(method: Unlearner, loss_fn_for, options: Any,
                      forget_rows: list[dict] | None = None) -> dict[str, Any]:
    """Load the Original, train every weight with ``loss_fn_for(student)``, save the result.

    ``options`` carries lr, batch_size, epochs, forget_only_epochs and seed.
    """
    ctx = method.ctx
    forget = forget_rows if forget_rows is not None else ctx.rows("forget")
    student = load_model(ctx.original_dir, merged=True)
    student.model.train()
    for param in student.model.parameters():
        param.requires_grad_(True)
    with method.timed():
        loss_fn: LossFn = loss_fn_for(student)
        history = run_unlearning(
            student, loader(student, forget, options.batch_size, True, options.seed),
            loader(student, ctx.rows("retain"), options.batch_size, True, options.seed),
            loss_fn,
            LoopOptions(epochs=options.epochs, forget_only_epochs=options.forget_only_epochs,
                        lr=options.lr, batch_size=options.batch_size, seed=options.seed),
            ctx.accelerator, desc=method.name,
        )
    if ctx.accelerator.is_main_process:
        save_model(student, ctx.out_dir, {"method": method.name})
    trainable, total = student.parameter_counts()
    return {"trainable_params": trainable, "total_params": total, "history": history}


def label_loss(forget_weight: float):
    """``loss_fn_for``: CE(retain) + forget_weight * CE(forget batch).

    NegGrad ascends on forget (a negative weight); the label-flipping Bad-Teacher
    descends on flipped forget samples (a positive one).
    """

    def loss_for(_student):
        def loss(model, forget_batch, retain_batch):
            l_forget = answer_ce(answer_logits(model, forget_batch), forget_batch["answer_ids"],
                                 forget_batch["answer_mask"])
            if retain_batch is None:
                return forget_weight * l_forget, {"forget_ce": l_forget.detach()}
            l_retain = answer_ce(answer_logits(model, retain_batch), retain_batch["answer_ids"],
                                 retain_batch["answer_mask"])
            return l_retain + forget_weight * l_forget, {"forget_ce": l_forget.detach(),
                                                         "retain_ce": l_retain.detach()}
        return loss

    return loss_for
