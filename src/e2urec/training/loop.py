"""The one supervised fine-tuning loop: accelerate, seeded, early stopping on valid loss."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from e2urec.backbones.registry import Backbone
from e2urec.backbones.scoring import AnswerTokens, answer_logits, p_yes
from e2urec.config import LoraConfig, TrainConfig
from e2urec.training.losses import label_ce


def make_accelerator(cpu: bool = False) -> Accelerator:
    return Accelerator(cpu=cpu)


def resolve_lora_targets(model: torch.nn.Module, targets: Sequence[str]) -> list[str] | str:
    """Map short names (q, v, ...) onto the module names this architecture uses."""
    if list(targets) in (["all-linear"], ["all"]):
        return "all-linear"
    names = {name.rsplit(".", 1)[-1] for name, mod in model.named_modules()
             if isinstance(mod, torch.nn.Linear) or type(mod).__name__ == "Conv1D"}
    resolved = []
    for target in targets:
        match = next((c for c in (target, f"{target}_proj") if c in names), None)
        if match is None:
            raise ValueError(f"LoRA target {target!r} matches no layer; "
                             f"linear layers here: {sorted(names)}")
        resolved.append(match)
    return resolved


def add_lora(backbone: Backbone, config: LoraConfig) -> Backbone:
    """Wrap the model with fresh LoRA adapters; only the adapters stay trainable."""
    peft_config = PeftLoraConfig(
        r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout,
        target_modules=resolve_lora_targets(backbone.model, config.targets),
        task_type="SEQ_2_SEQ_LM" if backbone.family == "seq2seq" else "CAUSAL_LM",
    )
    model = get_peft_model(backbone.model, peft_config)
    return Backbone(model, backbone.tokenizer, backbone.family, backbone.max_prompt_tokens)


def loader(backbone: Backbone, rows: Sequence[dict[str, Any]], batch_size: int,
           shuffle: bool, seed: int) -> DataLoader:
    encoder = backbone.encoder()
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(encoder.encode(rows), batch_size=batch_size, shuffle=shuffle,
                      collate_fn=encoder.collate, generator=generator)


@torch.no_grad()
@torch.no_grad()
def mean_answer_loss(model: torch.nn.Module, data: DataLoader, device: torch.device,
                     scope: str = "answer") -> float:
    """Mean label loss over ``data``, on the tokens ``scope`` names (as training does)."""
    return validate(model, data, device, scope)[0]


@torch.no_grad()
def validate(model: torch.nn.Module, data: DataLoader, device: torch.device,
             scope: str = "answer", tokens: AnswerTokens | None = None) -> tuple[float, float]:
    """(mean label loss, AUC of P(yes)) over ``data``; the AUC is NaN without ``tokens``."""
    model.eval()
    total, count = 0.0, 0
    width = 1 if scope == "decision" else None
    scores, labels = [], []
    for batch in data:
        batch = {k: v.to(device) for k, v in batch.items()}
        loss = label_ce(model, batch, scope)
        n = int(batch["answer_mask"][:, :width].sum())
        total, count = total + float(loss) * n, count + n
        if tokens is not None:
            scores.append(p_yes(answer_logits(model, batch), tokens).cpu())
            labels.append(batch["labels"].cpu())
    model.train()
    auc = math.nan
    if scores and len(set(torch.cat(labels).tolist())) == 2:
        auc = float(roc_auc_score(torch.cat(labels).numpy(), torch.cat(scores).numpy()))
    return total / max(count, 1), auc


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the trainable parameters (all a restore needs)."""
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def fit(backbone: Backbone, train_rows: Sequence[dict[str, Any]],
        valid_rows: Sequence[dict[str, Any]], config: TrainConfig,
        accelerator: Accelerator | None = None, desc: str = "train") -> dict[str, Any]:
    """Fine-tune ``backbone.model`` in place; return the loss history.

    With ``early_stopping`` the weights with the lowest valid loss are restored
    at the end and training stops once valid loss has not improved for
    ``patience`` epochs; without it every epoch runs, the last weights stay and
    no validation pass is spent.
    """
    config.validate()
    set_seed(config.seed)
    accelerator = accelerator or make_accelerator()
    train_rows = list(train_rows)[: config.max_samples or None]
    if not train_rows:
        raise ValueError(f"{desc}: no training samples")
    model = backbone.model
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    train_data = loader(backbone, train_rows, config.batch_size, True, config.seed)
    valid_data = loader(backbone, valid_rows, config.eval_batch_size, False, config.seed)
    model, optimizer, train_data = accelerator.prepare(model, optimizer, train_data)

    history: dict[str, Any] = {"train_loss": [], "valid_loss": [], "epochs_run": 0}
    best, best_state, stale = math.inf, None, 0
    start = time.perf_counter()
    steps = 0
    for epoch in range(config.epochs):
        running = []
        bar = tqdm(train_data, desc=f"{desc} epoch {epoch + 1}/{config.epochs}",
                   disable=None if accelerator.is_local_main_process else True, leave=False)
        for batch in bar:
            if config.max_steps is not None and steps >= config.max_steps:
                break
            steps += 1
            loss = label_ce(model, batch, config.answer_loss)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            running.append(loss.item())
            bar.set_postfix(loss=f"{sum(running[-20:]) / len(running[-20:]):.4f}")
        if not running:  # the step budget ran out at the epoch's start
            break
        history["train_loss"].append(sum(running) / len(running))
        history["epochs_run"] = epoch + 1
        if not config.early_stopping:
            continue  # valid loss only drives early stopping; evaluation measures the rest
        valid, auc = validate(accelerator.unwrap_model(model), valid_data, accelerator.device,
                              config.answer_loss, backbone.encoder().tokens)
        history["valid_loss"].append(valid)
        history.setdefault("valid_auc", []).append(auc)
        if valid < best - 1e-6:
            best, stale = valid, 0
            best_state = trainable_state(accelerator.unwrap_model(model))
        else:
            stale += 1
            if stale > config.patience:
                break
    unwrapped = accelerator.unwrap_model(model)
    if best_state is not None:
        unwrapped.load_state_dict(best_state, strict=False)
    backbone.model = unwrapped.eval()
    history["best_valid_loss"] = best if config.early_stopping else None
    history["seconds"] = time.perf_counter() - start
    return history
