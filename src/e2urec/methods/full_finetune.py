"""Shared machinery of the methods that fine-tune a full copy of the Original."""

from __future__ import annotations

from typing import Any

from e2urec.methods.base import Unlearner
from e2urec.training.checkpoints import load_model, save_model
from e2urec.training.loop import loader
from e2urec.training.unlearn_loop import LoopOptions, LossFn, run_unlearning


def unlearn_full_copy(method: Unlearner, loss_fn_for, options: Any,
                      forget_rows: list[dict] | None = None) -> dict[str, Any]:
    """Load the Original, train every weight with ``loss_fn_for(student)``, save the result.

    ``options`` carries lr, batch_size, epochs, forget_only_epochs and seed.
    """
    ctx = method.ctx
    forget = forget_rows if forget_rows is not None else ctx.rows("forget")
    student = load_model(ctx.original_dir)
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
