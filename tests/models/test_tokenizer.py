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


def test_every_word_of_a_vocabulary_is_one_token_even_when_its_letters_recur_in_other_words():
    from models.shapes_dataset import caption, sample_scene, vocabulary

    import numpy as np

    words = vocabulary()
    tok = build_tokenizer(words)
    assert {w: tok.tokenize(w) for w in words} == {w: [w + "</w>"] for w in words}
    assert tok.tokenize("three large squares") == ["three</w>", "large</w>", "squares</w>"]
    rng = np.random.default_rng(0)
    for _ in range(50):  # a training caption is one token per word (punctuation apart)
        text = caption(sample_scene(rng), rng)
        assert len(tok.tokenize(text)) == len(text.replace(",", " ,").split()), text
    # The order words are listed in does not matter; another word list gives other merges.
    assert build_vocab_and_merges(words[::-1]) == build_vocab_and_merges(words)
    assert build_vocab_and_merges(words + ["lighthouse"]) != build_vocab_and_merges(words)
    tiny = build_tokenizer()  # the tiny pipeline's vocabulary: the shipped prompt sets' words
    assert all(len(tiny.tokenize(w)) == 1 for w in project_words())


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


def _slow_clip_ids(folder, text):
    """transformers 4.x's slow CLIPTokenizer, re-implemented from vocab.json + merges.txt alone (no ftfy):
    lowercase, CLIP's regex, byte-to-unicode, rank-ordered BPE with `</w>` word ends, <start> ... <end>."""
    import json

    import regex

    from models.tokenizer import _byte_alphabet

    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("#version")
    ranks = {tuple(line.split()): i for i, line in enumerate(lines[1:])}
    specials = json.loads((folder / "special_tokens_map.json").read_text(encoding="utf-8"))
    alphabet = _byte_alphabet()
    pattern = regex.compile(r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
                            regex.IGNORECASE)
    ids = [vocab[specials["bos_token"]]]
    for token in pattern.findall(" ".join(text.split()).lower()):
        if token in specials.values():  # added tokens are split off before BPE
            ids.append(vocab[token])
            continue
        chars = "".join(alphabet[b] for b in token.encode("utf-8"))
        word = list(chars[:-1]) + [chars[-1] + "</w>"]
        while len(word) > 1:
            pairs = [(ranks.get((a, b), float("inf")), i) for i, (a, b) in enumerate(zip(word, word[1:]))]
            rank, i = min(pairs)
            if rank == float("inf"):
                break
            word[i:i + 2] = [word[i] + word[i + 1]]
        ids += [vocab[w] for w in word]
    return ids + [vocab[specials["eos_token"]]]


def test_shipped_legacy_files_agree_with_tokenizer_json(tmp_path):
    """vocab.json / merges.txt / special_tokens_map.json (what transformers 4.x and optimum read) tokenize every
    shipped prompt and odd text exactly as tokenizer.json does; writing them again gives the same bytes."""
    from transformers import CLIPTokenizer

    from models.tokenizer import LEGACY_FILES, write_legacy_files
    from models.trained import shapes_prompts_file, trained_pipeline_dir

    shipped = trained_pipeline_dir() / "tokenizer"
    tok = CLIPTokenizer.from_pretrained(str(shipped))
    texts = shapes_prompts_file("shapes_heldout.txt").read_text().splitlines()
    texts += shapes_prompts_file("shapes_calibration.txt").read_text().splitlines()
    texts += ["A  RED circle!", "zqxj ünïcode 42!", "it's two blue squares", "<|endoftext|> odd"]
    for text in texts:
        assert _slow_clip_ids(shipped, text) == tok(text).input_ids, text
    copy = tmp_path / "tokenizer"
    copy.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (copy / name).write_bytes((shipped / name).read_bytes())
    write_legacy_files(copy)
    for name in LEGACY_FILES:
        assert (copy / name).read_bytes() == (shipped / name).read_bytes(), name
    # the reference really reads merges.txt: without merges, words fall apart into bytes
    (copy / "merges.txt").write_text("#version: 0.2\n")
    assert _slow_clip_ids(copy, "a red circle") != tok("a red circle").input_ids


def test_saved_tiny_pipeline_has_the_legacy_tokenizer_files(tiny_pipeline_dir):
    from transformers import CLIPTokenizer

    folder = tiny_pipeline_dir / "tokenizer"
    tok = CLIPTokenizer.from_pretrained(str(folder))
    for text in ("a red bicycle", "lighthouse at night, 3 boats"):
        assert _slow_clip_ids(folder, text) == tok(text).input_ids
