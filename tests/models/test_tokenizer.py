from models.tokenizer import BOS, EOS, MAX_LENGTH, build_tokenizer, build_vocab_and_merges, project_words


def test_clip_semantics_start_end_and_padding():
    tok = build_tokenizer()
    ids = tok("a red bicycle", padding="max_length", max_length=MAX_LENGTH, truncation=True).input_ids
    assert len(ids) == MAX_LENGTH
    assert ids[0] == tok.convert_tokens_to_ids(BOS)
    end = ids.index(tok.convert_tokens_to_ids(EOS))
    assert end > 1 and all(i == tok.pad_token_id for i in ids[end:])
    assert tok.pad_token_id == tok.eos_token_id  # SD 1.x pads with <|endoftext|>


def test_prompt_words_are_single_tokens_when_isolated():
    tok = build_tokenizer(["bicycle", "lighthouse"])
    assert tok.tokenize("bicycle lighthouse") == ["bicycle</w>", "lighthouse</w>"]


def test_any_text_tokenizes_through_the_byte_alphabet():
    tok = build_tokenizer()
    ids = tok("zqxj ünïcode 42!").input_ids
    assert len(ids) > 6
    assert tok.eos_token_id not in ids[1:-1]  # nothing fell back to the unknown token (EOS)
    assert tok.decode(ids, skip_special_tokens=True).replace(" ", "") == "zqxjünïcode42!"


def test_vocabulary_is_deterministic():
    words = project_words()
    assert build_vocab_and_merges(words) == build_vocab_and_merges(list(reversed(words))[::-1])
    assert "lighthouse" in words and "a" in words
