"""The prompt sets image quality is judged on, and the parser that tells the evaluator what each prompt asks for.

Two sets, one prompt per line in `models/prompts/`:

- `heldout` (`shapes_heldout.txt`): unseen (shape, colour) pairs in the training captions' phrasing,
  the MS-COCO analogue of the paper's Table 2;
- `rephrased` (`shapes_rephrased.txt`): scenes of any combination, written in sentence forms, attribute
  orders and count words the training captions never use ("a pair of", "a trio of", digits, "a single"),
  the PartiPrompts analogue: does a configuration keep the model's generalisation to other phrasings?

`parse_prompt` reads both grammars: the training vocabulary (`shapes_dataset.parse_caption`) plus the
rephrased set's count words. `python -m models.prompt_sets write` regenerates the rephrased file
(deterministic; a test checks the shipped file equals it).
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from models.errors import ModelError
from models.shapes_dataset import ATTRIBUTES, PLURAL, Scene, parse_caption, sample_scene

PROMPT_FILES = {"heldout": "shapes_heldout.txt", "rephrased": "shapes_rephrased.txt"}
DESCRIPTIONS = {"heldout": "held-out shape/colour pairs, training phrasing",
                "rephrased": "new sentence forms, attribute orders and count words"}
REPHRASED_SEED = 7
REPHRASED_PROMPTS = 32

# Count words the training captions never use (they say a / one / two / three).
NEW_COUNT_WORDS = {"single": "one", "1": "one", "pair": "two", "2": "two", "trio": "three", "3": "three"}
COUNT_PHRASES = {"one": ("a single", "1"), "two": ("a pair of", "2"), "three": ("a trio of", "3")}
SIZE_PHRASES = {"small": ("small", "little"), "large": ("large", "big")}
# Each names its position word once (and no other attribute word), so the parse is unambiguous.
POSITION_PHRASES = {"left": ("toward the left", "on the far left", "over to the left"),
                    "right": ("toward the right", "on the far right", "over to the right"),
                    "top": ("up at the top", "along the top edge", "at the very top"),
                    "bottom": ("down at the bottom", "along the bottom edge", "at the very bottom"),
                    "center": ("in the exact center", "in the very middle", "dead center")}
# Orders the training templates never use: background or position first, colour and size after the noun.
TEMPLATES = ("{count} {shape} coloured {colour}, {size} in size, {position}; the background is {background}",
             "the background is {background} and {position} you can see {count} {size} {colour} {shape}",
             "an image with a {background} backdrop showing {count} {colour} {shape} of {size} size {position}",
             "{position}: {count} {shape}, {size} and {colour}, set against {background}",
             "please draw {count} {size} {shape} in {colour}, placed {position}, over plain {background}",
             "{background} backdrop, {colour} paint, {count} {size} {shape}, {position}",
             "what we want is {count} {shape} ({colour}, {size}) sitting {position} on {background}",
             "{size} {colour} {shape} {position} with {background} behind, {count} in total")


def parse_prompt(text: str) -> dict[str, str]:
    """The attributes a prompt asks for, in either set's grammar (attributes it does not mention are absent)."""
    asked = parse_caption(text)
    for word in re.findall(r"[a-z]+|[0-9]+", text.lower()):
        if word in NEW_COUNT_WORDS:  # an explicit count word beats the singular-noun default
            asked["count"] = NEW_COUNT_WORDS[word]
            break
    return asked


def rephrase(scene: Scene, rng: np.random.Generator) -> str:
    """A prompt stating every attribute of `scene` in one of the rephrased set's forms (drawn from `rng`)."""
    def pick(options):
        return options[rng.integers(len(options))]

    template = pick(TEMPLATES)
    count = pick(COUNT_PHRASES[scene.count])
    shape = scene.shape if scene.count == "one" else PLURAL[scene.shape]
    if template.endswith("in total"):  # the count comes last: a bare number reads right there
        count = {"one": "1", "two": "2", "three": "3"}[scene.count]
    return template.format(count=count, shape=shape, colour=scene.colour, size=pick(SIZE_PHRASES[scene.size]),
                           position=pick(POSITION_PHRASES[scene.position]), background=scene.background)


def rephrased_scenes(n: int = REPHRASED_PROMPTS, seed: int = REPHRASED_SEED) -> list[Scene]:
    """`n` scenes of any combination (seen and held-out pairs alike), every count equally often."""
    rng = np.random.default_rng(seed)
    scenes = []
    for i in range(n):
        scene = sample_scene(rng, heldout=None)
        scenes.append(Scene(**{**scene.__dict__, "count": ATTRIBUTES["count"][i % 3]}))
    return scenes


def rephrased_lines(n: int = REPHRASED_PROMPTS, seed: int = REPHRASED_SEED) -> list[str]:
    rng = np.random.default_rng(seed + 1)
    return [rephrase(scene, rng) for scene in rephrased_scenes(n, seed)]


@dataclass(frozen=True)
class PromptSet:
    name: str
    description: str
    prompts: tuple[str, ...]
    asked: tuple[dict, ...]     # what each prompt asks for (parse_prompt)


def prompt_file(name: str) -> Path:
    if name not in PROMPT_FILES:
        raise ModelError(f"unknown prompt set {name!r}: expected one of {', '.join(PROMPT_FILES)}")
    return Path(str(resources.files("models.prompts").joinpath(PROMPT_FILES[name])))


def load_prompt_set(name: str) -> PromptSet:
    """A shipped prompt set, every prompt parsed; a prompt that asks for no attribute is an error."""
    path = prompt_file(name)
    try:
        prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read prompt set {name!r} ({str(path)!r}): {exc}") from None
    asked = [parse_prompt(p) for p in prompts]
    empty = [p for p, a in zip(prompts, asked) if not a]
    if not prompts or empty:
        raise ModelError(f"prompt set {name!r} ({str(path)!r}): "
                         + (f"prompt {empty[0]!r} names no attribute" if empty else "no prompts"))
    return PromptSet(name, DESCRIPTIONS[name], tuple(prompts), tuple(asked))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Prompt sets of the quality stage.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("write", help=f"write {PROMPT_FILES['rephrased']} (deterministic)")
    p.add_argument("directory", nargs="?", default=str(Path(__file__).parent / "prompts"))
    args = parser.parse_args(argv)
    path = Path(args.directory) / PROMPT_FILES["rephrased"]
    path.write_text("\n".join(rephrased_lines()) + "\n", encoding="utf-8")
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
