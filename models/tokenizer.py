"""A CLIP-style BPE tokenizer whose vocabulary and merges the project generates itself.

It has CLIP's real semantics: byte-level BPE with `</w>` word ends, `<|startoftext|>` (BOS)
first, `<|endoftext|>` (EOS) after the text, and EOS as padding up to 77 tokens, so the
cross-attention <start> column behaves as in Stable Diffusion 1.x.
"""
from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
MAX_LENGTH = 77
# What CLIP tokenizer loaders other than `tokenizers` read (transformers 4.x's CLIPTokenizer, optimum, older
# diffusers); transformers 5 saves only tokenizer.json + tokenizer_config.json.
LEGACY_FILES = ("vocab.json", "merges.txt", "special_tokens_map.json")
SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")


def _byte_alphabet() -> list[str]:
    """GPT-2/CLIP's reversible byte -> printable unicode map, in byte order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def project_words() -> list[str]:
    """Every word of the shipped prompt sets, sorted: the tokenizer learns them as whole tokens."""
    words: set[str] = set()
    for name in ("calibration.txt", "heldout.txt"):
        text = resources.files("models.prompts").joinpath(name).read_text(encoding="utf-8")
        words.update(re.findall(r"[a-z]+|[0-9]", text.lower()))
    return sorted(words)


def build_vocab_and_merges(words: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Bytes, bytes-with-`</w>`, then BPE merges learned on the word list until every word is one token.

    The merges are learned the way BPE is trained (repeatedly merge the most frequent adjacent pair in every
    word, ties broken by the pair's text), so replaying them in rank order, as every BPE tokenizer does,
    rebuilds each listed word whole. (Chaining each word's own merges left to right does not: "large" meets
    the earlier-ranked ("a", "r") of "are" and stays split.) Depends only on the set of words.
    """
    alphabet = _byte_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet]
    segmented = []
    for word in sorted(set(words)):
        chars = [alphabet[b] for b in word.encode("utf-8")]
        segmented.append(chars[:-1] + [chars[-1] + "</w>"])
    merges: list[tuple[str, str]] = []
    known = set(tokens)
    while True:
        counts: dict[tuple[str, str], int] = {}
        for pieces in segmented:
            for pair in zip(pieces, pieces[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        merges.append(best)
        joined = best[0] + best[1]
        if joined not in known:
            known.add(joined)
            tokens.append(joined)
        segmented = [_merge_pair(pieces, best) for pieces in segmented]
    tokens += [BOS, EOS]
    return {tok: i for i, tok in enumerate(tokens)}, merges


def _merge_pair(pieces: list[str], pair: tuple[str, str]) -> list[str]:
    """`pieces` with every occurrence of `pair` joined, left to right (as BPE applies one merge)."""
    out, i = [], 0
    while i < len(pieces):
        if i + 1 < len(pieces) and (pieces[i], pieces[i + 1]) == pair:
            out.append(pieces[i] + pieces[i + 1])
            i += 2
        else:
            out.append(pieces[i])
            i += 1
    return out


def build_tokenizer(words: list[str] | None = None):
    """A `transformers.CLIPTokenizer` over the project's words (the shipped prompt vocabulary by default)."""
    from transformers import CLIPTokenizer

    vocab, merges = build_vocab_and_merges(project_words() if words is None else sorted(set(words)))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_LENGTH)


def write_legacy_files(folder: str | Path) -> list[Path]:
    """Write vocab.json, merges.txt and special_tokens_map.json beside a saved tokenizer.json, derived from it
    (its vocabulary by id, its merges in rank order, the special tokens of tokenizer_config.json)."""
    folder = Path(folder)
    model = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    vocab = dict(sorted(model["vocab"].items(), key=lambda item: item[1]))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    specials = {key: config[key] for key in SPECIAL_TOKEN_KEYS if key in config}
    texts = {"vocab.json": json.dumps(vocab, ensure_ascii=False) + "\n",
             "merges.txt": "#version: 0.2\n" + "".join(m + "\n" for m in merges),
             "special_tokens_map.json": json.dumps(specials, indent=2, sort_keys=True) + "\n"}
    for name, text in texts.items():
        (folder / name).write_text(text, encoding="utf-8")
    return [folder / name for name in LEGACY_FILES]
