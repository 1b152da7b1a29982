import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from e2urec.backbones.registry import create_backbone
from e2urec.backbones.scoring import TokenizerError, answer_logits, answer_tokens, p_yes
from e2urec.backbones.tiny import train_word_tokenizer
from e2urec.checkpoints.scorers import ModelScorer
from e2urec.config import BackboneConfig
from e2urec.data.samples import read_split
from e2urec.evaluation.ranking import candidate_groups, candidate_scores
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


def test_title_tokens_make_every_catalogue_title_one_token_and_a_model_trains(prepared_dir):
    """With ``tiny_title_tokens`` each catalogue title is one token wherever it appears
    (history or candidate); the words stay, for text that is no title (a trigger)."""
    from e2urec.data.catalog import read_catalog, read_vocabulary
    from e2urec.data.prompts import canary_triggers

    assert BackboneConfig().tiny_title_tokens  # the default, and the demo's
    config = tiny_backbone("tiny-llama")
    plain = create_backbone(config, prepared_dir, seed=0)
    config.tiny_title_tokens = True
    titled = create_backbone(config, prepared_dir, seed=0)
    titles = read_vocabulary(prepared_dir)["titles"]
    assert len(titled.tokenizer) == len(plain.tokenizer) + len(titles)
    for title in titles:
        assert titled.tokenizer.tokenize(title) == [title]
    row = read_split(prepared_dir, "train")[0]
    catalog = read_catalog(prepared_dir)
    tokens = titled.tokenizer.tokenize(row["prompt"])
    assert catalog.titles[row["item_id"]] in tokens
    assert len(tokens) < len(plain.tokenizer.tokenize(row["prompt"]))
    # Not a title (a canary trigger): still read word by word, never the unknown token.
    trigger = canary_triggers(["u"], titles, seed=0)["u"]
    words = titled.tokenizer.tokenize(trigger)
    assert len(words) > 1 and titled.tokenizer.unk_token not in words
    # The real code path: a step of training moves the title's own embedding.
    encoder = titled.encoder()
    batch = encoder.collate(encoder.encode([row]))
    title_id = titled.tokenizer.convert_tokens_to_ids(catalog.titles[row["item_id"]])
    before = titled.model.get_input_embeddings().weight[title_id].clone()
    answer_logits(titled.model, batch)[:, 0].sum().backward()
    torch.optim.SGD(titled.model.parameters(), lr=1.0).step()
    assert not torch.equal(before, titled.model.get_input_embeddings().weight[title_id])
    # Candidates of one prompt now differ in one token: read the prefix once, same scores.
    groups = candidate_groups(prepared_dir, negatives=15, max_positives=4)
    scorer = ModelScorer(titled)
    whole = candidate_scores(scorer, groups, batch_size=7, shared_prefix=False)
    shared = candidate_scores(scorer, groups, batch_size=5, shared_prefix=True)
    assert np.abs(whole - shared).max() < 1e-5 and whole.std() > 0
