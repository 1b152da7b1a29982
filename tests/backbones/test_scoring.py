import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from e2urec.backbones.registry import create_backbone
from e2urec.backbones.scoring import TokenizerError, answer_logits, answer_tokens, p_yes
from e2urec.backbones.tiny import train_word_tokenizer
from e2urec.data.samples import read_split
from tests.helpers import tiny_backbone


def byte_bpe_tokenizer(texts) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer, the kind Llama-3/SmolLM2/GPT-2 use."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


def test_yes_no_ids_come_from_the_tokenizer():
    texts = ["Yes. No. Yes. maybe"] * 50
    word = train_word_tokenizer(texts, 100)
    ids = answer_tokens(word)
    assert word.convert_ids_to_tokens([ids.yes_id, ids.no_id]) == ["Yes", "No"]
    bpe = byte_bpe_tokenizer(texts)
    ids = answer_tokens(bpe)
    assert bpe.decode([ids.yes_id]).startswith("Y") and bpe.decode([ids.no_id]).startswith("N")
    assert ids.yes_id != ids.no_id


def test_tokenizer_without_distinct_answers_is_rejected():
    tok = train_word_tokenizer(["unrelated words"], 10)
    tok_without = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0, "a": 1}, unk_token="<unk>")),
        unk_token="<unk>")
    with pytest.raises(TokenizerError):
        answer_tokens(tok_without)
    ids = answer_tokens(tok)  # the trained tokenizer always knows the answers
    assert tok.convert_ids_to_tokens([ids.yes_id, ids.no_id]) == ["Yes", "No"]


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-t5"])
def test_batched_answer_logits_match_single_sample_full_forward(name, prepared_dir):
    backbone = create_backbone(tiny_backbone(name), prepared_dir, seed=0)
    model = backbone.model.eval()
    encoder = backbone.encoder()
    rows = read_split(prepared_dir, "test")[:5]
    rows[1] = {**rows[1], "prompt": rows[1]["prompt"][:60]}  # force padding
    features = encoder.encode(rows)
    with torch.no_grad():
        batched = answer_logits(model, encoder.collate(features))
        for i, feature in enumerate(features):
            alone = encoder.collate([feature])
            inputs = {k: v for k, v in alone.items() if k in (
                "input_ids", "attention_mask", "decoder_input_ids")}
            full = model(**inputs).logits  # every position, no logits_to_keep
            width = len(feature["answer"])
            expected = full[0, -width:] if backbone.family == "causal" else full[0, :width]
            torch.testing.assert_close(batched[i, :width], expected, atol=1e-4, rtol=1e-4)
        scores = p_yes(batched, encoder.tokens)
    assert scores.shape == (5,) and bool(((scores > 0) & (scores < 1)).all())


def test_scoring_only_collation_keeps_the_first_slot(prepared_dir):
    backbone = create_backbone(tiny_backbone("tiny-llama"), prepared_dir, seed=0)
    encoder = backbone.encoder()
    rows = read_split(prepared_dir, "test")[:3]
    features = encoder.encode(rows)
    full, first = encoder.collate(features), encoder.collate(features, first_slot_only=True)
    assert first["answer_ids"].shape[1] == 1
    assert first["input_ids"].shape[1] == full["input_ids"].shape[1] - full[
        "answer_ids"].shape[1] + 1
    with torch.no_grad():
        a = answer_logits(backbone.model.eval(), full)[:, 0]
        b = answer_logits(backbone.model, first)[:, 0]
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_long_prompts_keep_their_question(prepared_dir):
    config = tiny_backbone("tiny-llama")
    config.max_prompt_tokens = 20
    backbone = create_backbone(config, prepared_dir, seed=0)
    row = read_split(prepared_dir, "test")[0]
    feature = backbone.encoder().encode([row])[0]
    assert len(feature["prompt"]) == 20
    tail = backbone.tokenizer.decode(feature["prompt"][-4:])
    assert "yes or no" in tail
