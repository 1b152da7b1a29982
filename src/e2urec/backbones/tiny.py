"""Compact random-initialised backbones and a word-level tokenizer trained on texts.

These are honest small models, not stand-ins: the same code path as a
pretrained LLM, sized so that a CPU trains one on MovieLens-100K in a minute.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

from e2urec.config import BackboneConfig
from e2urec.data.prompts import NO_ANSWER, YES_ANSWER

SPECIAL_TOKENS = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>",
                  "bos_token": "<s>"}


def train_word_tokenizer(texts: Iterable[str], vocab_size: int,
                         whole: Iterable[str] = ()) -> PreTrainedTokenizerFast:
    """A word-level tokenizer (words and punctuation runs) fitted to ``texts``; each
    string of ``whole`` (a catalogue's titles) is one token of its own besides."""
    tok = Tokenizer(models.WordLevel(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS.values()),
    )
    # The answers go first so that "Yes"/"No" are always in the vocabulary.
    tok.train_from_iterator(_with_answers(texts), trainer=trainer)
    # Matched before the words, longest first: a movie is one token wherever its title
    # appears, so the model can learn each movie as itself, not only through its words.
    tok.add_tokens([AddedToken(text, normalized=False) for text in sorted(set(whole))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def _with_answers(texts: Iterable[str]) -> Iterable[str]:
    yield from [YES_ANSWER, NO_ANSWER] * 1000
    yield from texts


def build_tiny_model(family: str, config: BackboneConfig, tokenizer: PreTrainedTokenizerFast,
                     seed: int) -> torch.nn.Module:
    """A seeded random-initialised Llama (causal) or T5 (seq2seq) of the configured size."""
    ids = {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id}
    torch.manual_seed(seed)
    if family == "causal":
        return LlamaForCausalLM(LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=config.tiny_hidden,
            intermediate_size=config.tiny_intermediate, num_hidden_layers=config.tiny_layers,
            num_attention_heads=config.tiny_heads, num_key_value_heads=config.tiny_heads,
            max_position_embeddings=max(1024, config.max_prompt_tokens + 16),
            tie_word_embeddings=config.tiny_tie_embeddings, bos_token_id=tokenizer.bos_token_id,
            **ids,
        ))
    return T5ForConditionalGeneration(T5Config(
        vocab_size=len(tokenizer), d_model=config.tiny_hidden,
        d_kv=config.tiny_hidden // config.tiny_heads, d_ff=config.tiny_intermediate,
        num_layers=config.tiny_layers, num_decoder_layers=config.tiny_layers,
        num_heads=config.tiny_heads, decoder_start_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=config.tiny_tie_embeddings, **ids,
    ))
