"""Batches and answer-position logits for causal and seq2seq backbones.

Layout. Causal: the prompt is left-padded and the answer (without its last
token) follows, so the positions that predict the answer are the last ``A``
of every row and ``logits_to_keep`` computes vocabulary logits only there.
Seq2seq: the encoder reads the prompt; the decoder reads the shifted answer
(``A`` positions). Either way a model returns ``[B, A, V]`` answer logits, and
slot 0 is the answer position that scores Yes/No.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from e2urec.data.prompts import NO_ANSWER, YES_ANSWER


class TokenizerError(ValueError):
    """The tokenizer cannot express the Yes/No answers as distinct tokens."""


@dataclass(frozen=True)
class AnswerTokens:
    yes_id: int
    no_id: int


def answer_tokens(tokenizer: PreTrainedTokenizerBase) -> AnswerTokens:
    """The first token of "Yes." and of "No.", read from the tokenizer."""
    yes = tokenizer(YES_ANSWER, add_special_tokens=False)["input_ids"]
    no = tokenizer(NO_ANSWER, add_special_tokens=False)["input_ids"]
    if not yes or not no or yes[0] == no[0]:
        raise TokenizerError(f"tokenizer gives no distinct first tokens for {YES_ANSWER!r} "
                             f"and {NO_ANSWER!r}: {yes} vs {no}")
    if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in (yes[0], no[0]):
        raise TokenizerError("the Yes/No answers map to the unknown token")
    return AnswerTokens(yes[0], no[0])


class Encoder:
    """Tokenises samples once and collates them into model inputs."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, family: str, max_prompt_tokens: int,
                 decoder_start_token_id: int | None = None):
        if family not in ("causal", "seq2seq"):
            raise ValueError(f"unknown model family {family!r}")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer = tokenizer
        self.family = family
        self.max_prompt_tokens = max_prompt_tokens
        self.decoder_start = decoder_start_token_id
        self.tokens = answer_tokens(tokenizer)

    def encode(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        if not rows:
            return []
        tok = self.tokenizer
        prompts = tok([r["prompt"] for r in rows], add_special_tokens=False)["input_ids"]
        answers = tok([r["answer"] for r in rows], add_special_tokens=False)["input_ids"]
        bos, eos = self._bos(), self._eos()
        suffix = eos if self.family == "seq2seq" else []
        room = self._room()
        features = []
        for index, (row, prompt, answer) in enumerate(zip(rows, prompts, answers, strict=True)):
            prompt = prompt[-room:]  # keep the question, drop the oldest history
            prompt = bos + prompt + suffix
            features.append({"index": index, "prompt": prompt, "answer": answer + eos,
                             "label": int(row["label"])})
        return features

    def _bos(self) -> list[int]:
        bos = self.tokenizer.bos_token_id
        return [bos] if self.family == "causal" and bos is not None else []

    def _eos(self) -> list[int]:
        eos = self.tokenizer.eos_token_id
        return [eos] if eos is not None else []

    def _room(self) -> int:
        """Prompt tokens a row keeps, besides its BOS (causal) or EOS (seq2seq)."""
        return self.max_prompt_tokens - len(self._bos()) - \
            (len(self._eos()) if self.family == "seq2seq" else 0)

    def batches(self, rows: Sequence[dict[str, Any]], batch_size: int,
                first_slot_only: bool = True) -> Iterator[dict[str, torch.Tensor]]:
        """``rows`` encoded and collated, ``batch_size`` at a time, in order."""
        features = self.encode(rows)
        for start in range(0, len(features), batch_size):
            yield self.collate(features[start:start + batch_size], first_slot_only)

    def split_prefix(self, rows: Sequence[dict[str, Any]]
                     ) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        """``rows`` (causal prompts that differ only near their end, e.g. one user's
        prompt asked about many movies) as their shared token prefix ``[1, P]`` and
        features of the remainders (each at least one token) for :meth:`collate`.

        Prefix plus remainder are exactly the tokens each prompt encodes to on its
        own: the text is cut at the last space before the prompts differ and each
        side tokenised once, which is checked on the first prompt; a tokenizer that
        merges across that space, or a prompt long enough to be cut, takes the
        slow way (every prompt encoded whole, split at their longest shared tokens).
        """
        if self.family != "causal":
            raise ValueError("a shared prefix is read ahead only by causal models")
        texts = [r["prompt"] for r in rows]
        cut = texts[0].rfind(" ", 0, len(os.path.commonprefix(texts)))
        split = self._split_at_space(rows, cut) if cut > 0 else None
        return split if split is not None else self._split_tokens(rows)

    def _split_at_space(self, rows: Sequence[dict[str, Any]], cut: int
                        ) -> tuple[torch.Tensor, list[dict[str, Any]]] | None:
        tok = self.tokenizer
        texts = [r["prompt"] for r in rows]
        head = tok(texts[0][:cut], add_special_tokens=False)["input_ids"]
        tails = tok([t[cut:] for t in texts], add_special_tokens=False)["input_ids"]
        whole = tok(texts[0], add_special_tokens=False)["input_ids"]
        bos, eos = self._bos(), self._eos()
        if whole != head + tails[0] or len(head) + max(map(len, tails)) > self._room():
            return None
        answers = {a: tok(a, add_special_tokens=False)["input_ids"] + eos
                   for a in {r["answer"] for r in rows}}
        features = [{"index": i, "prompt": tail, "answer": answers[row["answer"]],
                     "label": int(row["label"])}
                    for i, (row, tail) in enumerate(zip(rows, tails, strict=True))]
        return torch.tensor([bos + head], dtype=torch.long), features

    def _split_tokens(self, rows: Sequence[dict[str, Any]]
                      ) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        features = self.encode(rows)
        prompts = [f["prompt"] for f in features]
        shared = min(len(p) for p in prompts) - 1
        first = prompts[0]
        for prompt in prompts[1:]:
            shared = next((i for i in range(shared) if prompt[i] != first[i]), shared)
        tails = [{**f, "prompt": f["prompt"][shared:]} for f in features]
        return torch.tensor([first[:shared]], dtype=torch.long), tails

    def collate(self, features: Sequence[dict[str, Any]], first_slot_only: bool = False
                ) -> dict[str, torch.Tensor]:
        """Tensors for a batch; ``first_slot_only`` keeps just the Yes/No position."""
        pad = self.tokenizer.pad_token_id
        answers = [f["answer"][:1] if first_slot_only else f["answer"] for f in features]
        width = max(len(a) for a in answers)
        answer_ids = torch.full((len(features), width), pad, dtype=torch.long)
        answer_mask = torch.zeros((len(features), width), dtype=torch.bool)
        for i, ans in enumerate(answers):
            answer_ids[i, :len(ans)] = torch.tensor(ans)
            answer_mask[i, :len(ans)] = True
        batch = {"answer_ids": answer_ids, "answer_mask": answer_mask,
                 "labels": torch.tensor([f["label"] for f in features]),
                 "index": torch.tensor([f["index"] for f in features])}
        if self.family == "causal":
            batch.update(self._causal_inputs(features, answers, width, pad))
        else:
            batch.update(self._seq2seq_inputs(features, answer_ids, answer_mask, pad))
        return batch

    def _causal_inputs(self, features, answers, width, pad) -> dict[str, torch.Tensor]:
        prompt_len = max(len(f["prompt"]) for f in features)
        total = prompt_len + width - 1
        input_ids = torch.full((len(features), total), pad, dtype=torch.long)
        mask = torch.zeros((len(features), total), dtype=torch.long)
        for i, (f, ans) in enumerate(zip(features, answers, strict=True)):
            start = prompt_len - len(f["prompt"])
            seq = f["prompt"] + ans[:-1]
            input_ids[i, start:start + len(seq)] = torch.tensor(seq)
            mask[i, start:start + len(seq)] = 1
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        return {"input_ids": input_ids, "attention_mask": mask, "position_ids": position_ids}

    def _seq2seq_inputs(self, features, answer_ids, answer_mask, pad) -> dict[str, torch.Tensor]:
        prompt_len = max(len(f["prompt"]) for f in features)
        input_ids = torch.full((len(features), prompt_len), pad, dtype=torch.long)
        mask = torch.zeros((len(features), prompt_len), dtype=torch.long)
        for i, f in enumerate(features):
            input_ids[i, :len(f["prompt"])] = torch.tensor(f["prompt"])
            mask[i, :len(f["prompt"])] = 1
        start = self.decoder_start if self.decoder_start is not None else pad
        decoder_input_ids = torch.cat(
            [torch.full((len(features), 1), start, dtype=torch.long), answer_ids[:, :-1]], dim=1)
        decoder_mask = torch.cat(
            [torch.ones((len(features), 1), dtype=torch.long), answer_mask[:, :-1].long()], dim=1)
        return {"input_ids": input_ids, "attention_mask": mask,
                "decoder_input_ids": decoder_input_ids, "decoder_attention_mask": decoder_mask}


MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids", "decoder_input_ids",
                "decoder_attention_mask")


def answer_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Vocabulary logits at the answer positions only: ``[B, A, V]``."""
    inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
    width = batch["answer_ids"].shape[1]
    if "decoder_input_ids" in inputs:
        return model(**inputs, use_cache=False).logits
    return model(**inputs, logits_to_keep=width, use_cache=False).logits


def yes_no_logits(logits: torch.Tensor, tokens: AnswerTokens) -> torch.Tensor:
    """``[B, 2]`` logits of (No, Yes) at the answer position (slot 0)."""
    first = logits[:, 0] if logits.dim() == 3 else logits
    return torch.stack([first[:, tokens.no_id], first[:, tokens.yes_id]], dim=-1)


def p_yes(logits: torch.Tensor, tokens: AnswerTokens) -> torch.Tensor:
    """P(yes) = softmax over the Yes and No logits at the answer position."""
    return yes_no_logits(logits, tokens).float().softmax(-1)[:, 1]


def binary_log_loss(logits: torch.Tensor, labels: torch.Tensor,
                    tokens: AnswerTokens) -> torch.Tensor:
    """Per-row -log P(true answer) over the Yes/No pair alone: ``[B]``.

    The one scoring space every forgetting measure uses (membership attacks, the
    stop rule, verification): probability moved off "Yes"/"No" onto other
    tokens changes no answer, so it must not change a measure either.
    """
    pair = yes_no_logits(logits, tokens).float()
    log_odds = pair[:, 1] - pair[:, 0]
    sign = labels.to(log_odds.device).float() * 2 - 1
    return torch.nn.functional.softplus(-sign * log_odds)
