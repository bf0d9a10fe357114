"""A procedural text-to-image dataset the project generates itself: 32x32 scenes of simple shapes.

Every scene is one kind of object (shape, colour, size) repeated `count` times in one region of
the image (position) over a plain background; its caption says so in one of several sentence forms,
and the attribute labels are kept. Nothing is stored: `render_batch(rng, n)` draws scenes on the
fly with numpy (4x supersampled, so edges are anti-aliased), deterministically from the generator.

Some (shape, colour) pairs never occur in training (`HELDOUT_PAIRS`); the held-out prompt set
(`models/prompts/shapes_heldout.txt`, written by `python -m models.shapes_dataset write-prompts`)
asks for exactly those, the analogue of PartiPrompts' unseen compositions.
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SIZE = 32
SUPERSAMPLE = 4

# Attribute vocabularies: the order is the class index the evaluator predicts.
SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom", "center")
COUNTS = ("one", "two", "three")
BACKGROUNDS = ("white", "black", "gray")
ATTRIBUTES = {"shape": SHAPES, "colour": COLOURS, "size": SIZES, "position": POSITIONS,
              "count": COUNTS, "background": BACKGROUNDS}

HELDOUT_PAIRS = (("circle", "purple"), ("square", "orange"), ("triangle", "blue"), ("cross", "yellow"))

RGB = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 225), "yellow": (240, 215, 40),
       "purple": (150, 60, 195), "orange": (245, 140, 30),
       "white": (240, 240, 240), "black": (20, 20, 20), "gray": (128, 128, 128)}
DIAMETER = {"small": 6.0, "large": 10.0}  # pixels at 32x32; capped by the room count objects leave
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}
SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
POSITION_PHRASES = {"left": ("on the left", "at the left", "on the left side"),
                    "right": ("on the right", "at the right", "on the right side"),
                    "top": ("at the top", "near the top", "in the top half"),
                    "bottom": ("at the bottom", "near the bottom", "in the bottom half"),
                    "center": ("in the center", "in the middle", "at the center")}
BACKGROUND_PHRASES = ("on a {} background", "against a {} background", "over a {} background")
TEMPLATES = ("{count} {size} {colour} {shape} {position} {background}",
             "{count} {size} {colour} {shape} {background}, {position}",
             "a picture of {count} {size} {colour} {shape} {position} {background}",
             "{background_noun} with {count} {size} {colour} {shape} {position}",
             "{count} {colour} {shape}, {size}, {position} {background}",
             "there is {count} {size} {colour} {shape} {position} {background}")


@dataclass(frozen=True)
class Scene:
    """One scene's attribute labels (words from the vocabularies above)."""
    shape: str
    colour: str
    size: str
    position: str
    count: str
    background: str

    def labels(self) -> dict[str, int]:
        return {name: values.index(getattr(self, name)) for name, values in ATTRIBUTES.items()}


def vocabulary() -> list[str]:
    """Every word a caption can use: the tokenizer learns each as a whole token."""
    words: set[str] = set()
    for text in list(TEMPLATES) + [p for ps in POSITION_PHRASES.values() for p in ps] + list(BACKGROUND_PHRASES):
        words.update(re.findall(r"[a-z]+", re.sub(r"\{[a-z_]*\}", " ", text)))
    words |= set(SHAPES) | set(PLURAL.values()) | set(COLOURS) | set(BACKGROUNDS) | set(COUNTS)
    words |= {w for ws in SIZE_WORDS.values() for w in ws} | {"a", "are", "background"}
    return sorted(words)


def is_heldout(scene: Scene) -> bool:
    return (scene.shape, scene.colour) in HELDOUT_PAIRS


def sample_scene(rng: np.random.Generator, heldout: bool | None = False) -> Scene:
    """A uniformly random scene; `heldout` False: training combinations only, True: held-out only, None: any."""
    while True:
        scene = Scene(*(values[rng.integers(len(values))] for values in ATTRIBUTES.values()))
        if heldout is None or is_heldout(scene) == heldout:
            return scene


def caption(scene: Scene, rng: np.random.Generator | None = None, omit_probability: float = 0.0,
            omit_identity_probability: float = 0.0) -> str:
    """A sentence describing `scene`; `rng` picks the template and synonyms (None: the first of each).

    With `omit_probability`, size, position and background are each left out at that rate, so
    captions vary in how much they say, as real captions do. With `omit_identity_probability`, the
    colour word and the shape noun are each left out at that rate ("two large on the left"): training
    on those teaches a model that each word alone carries its attribute, which is what lets it compose
    the (shape, colour) pairs it never saw (a causal text encoder otherwise mixes the colour into the
    shape token). Neither draws from `rng` when its rate is 0.
    """
    def pick(options):
        return options[0] if rng is None else options[rng.integers(len(options))]

    def omitted():
        return rng is not None and omit_probability > 0 and rng.random() < omit_probability

    plural = scene.count != "one"
    count = scene.count if plural else pick(("a", "one"))
    size = "" if omitted() else pick(SIZE_WORDS[scene.size])
    position = "" if omitted() else pick(POSITION_PHRASES[scene.position])
    drop_background = omitted()
    background = "" if drop_background else pick(BACKGROUND_PHRASES).format(scene.background)
    template = pick(TEMPLATES)
    if template.startswith("{background_noun}") and drop_background:
        template = TEMPLATES[0]
    identity_omitted = [rng is not None and omit_identity_probability > 0 and rng.random() < omit_identity_probability
                        for _ in range(2)]
    colour = "" if identity_omitted[0] else scene.colour
    shape = "" if identity_omitted[1] else PLURAL[scene.shape] if plural else scene.shape
    text = template.format(count=count, size=size, colour=colour, shape=shape,
                           position=position, background=background,
                           background_noun=f"a {scene.background} background")
    if plural:
        text = text.replace("there is", "there are")
    text = re.sub(r"\s+,", ",", re.sub(r"\s+", " ", text)).strip(" ,")
    return re.sub(r",\s*,", ",", text)


_WORD_TO_ATTRIBUTE = {w: ("colour", w) for w in COLOURS}
_WORD_TO_ATTRIBUTE.update({w: ("background", w) for w in BACKGROUNDS})
_WORD_TO_ATTRIBUTE.update({w: ("size", s) for s, ws in SIZE_WORDS.items() for w in ws})
_WORD_TO_ATTRIBUTE.update({w: ("shape", w) for w in SHAPES})
_WORD_TO_ATTRIBUTE.update({p: ("shape", s) for s, p in PLURAL.items()})
_WORD_TO_ATTRIBUTE.update({w: ("position", w) for w in POSITIONS})
_WORD_TO_ATTRIBUTE.update({"middle": ("position", "center"), "two": ("count", "two"),
                           "three": ("count", "three"), "one": ("count", "one")})


def parse_caption(text: str) -> dict[str, str]:
    """The attributes a caption in this vocabulary asks for (those it mentions; others are absent)."""
    found: dict[str, str] = {}
    for word in re.findall(r"[a-z]+", text.lower()):
        if word in _WORD_TO_ATTRIBUTE:
            name, value = _WORD_TO_ATTRIBUTE[word]
            found.setdefault(name, value)
        if word in SHAPES and "count" not in found:
            found["count"] = "one"  # a singular noun means one object
    return found


# ---- drawing -------------------------------------------------------------------------------------

def _shape_mask(shape: str, x: np.ndarray, y: np.ndarray, cx: float, cy: float, d: float) -> np.ndarray:
    """Which supersampled pixel centres (x, y, in 32-px units) lie inside the shape of size d at (cx, cy)."""
    r = d / 2
    dx, dy = x - cx, y - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        s = r * 0.9  # the same visual weight as the circle
        return (np.abs(dx) <= s) & (np.abs(dy) <= s)
    if shape == "triangle":  # apex up, base at the bottom
        inside_y = (dy <= r) & (dy >= -r)
        half_width = (dy + r) / 2  # grows from 0 at the apex to r at the base
        return inside_y & (np.abs(dx) <= half_width)
    if shape == "cross":
        arm = r / 3
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= r))
    raise ValueError(f"unknown shape {shape!r}")


# (long-axis start, long-axis end, cross-axis centre, long axis is horizontal)
_REGIONS = {"left": (1.0, 31.0, 8.0, False), "right": (1.0, 31.0, 24.0, False),
            "top": (1.0, 31.0, 8.0, True), "bottom": (1.0, 31.0, 24.0, True),
            "center": (1.0, 31.0, 16.0, True)}


def object_centres(scene: Scene, rng: np.random.Generator) -> tuple[list[tuple[float, float]], float]:
    """Centres (x, y) of the scene's objects and their diameter: evenly spaced slots along the region, jittered."""
    n = COUNTS.index(scene.count) + 1
    start, end, across, horizontal = _REGIONS[scene.position]
    if scene.position == "center" and n == 1:
        start, end = 10.0, 22.0
    slot = (end - start) / n
    d = min(DIAMETER[scene.size] + rng.uniform(-0.5, 0.5), slot - 2.0)
    along_room = max(0.0, min(1.5, (slot - d) / 2 - 1.0))  # neighbours stay >= 2 px apart: countable
    centres = []
    for k in range(n):
        a = start + (k + 0.5) * slot + rng.uniform(-along_room, along_room)
        c = across + rng.uniform(-1.5, 1.5)
        centres.append((a, c) if horizontal else (c, a))
    return centres, d


def render(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """The scene as an HxWx3 float32 image in [0, 1] (colours jittered slightly)."""
    n = IMAGE_SIZE * SUPERSAMPLE
    coords = (np.arange(n, dtype=np.float32) + 0.5) / SUPERSAMPLE
    x, y = np.meshgrid(coords, coords)
    bg = np.clip(np.array(RGB[scene.background], np.float32) + rng.uniform(-8, 8, 3), 0, 255)
    fg = np.clip(np.array(RGB[scene.colour], np.float32) + rng.uniform(-12, 12, 3), 0, 255)
    centres, d = object_centres(scene, rng)
    mask = np.zeros((n, n), bool)
    for cx, cy in centres:
        mask |= _shape_mask(scene.shape, x, y, cx, cy, d)
    big = np.where(mask[..., None], fg, bg)
    image = big.reshape(IMAGE_SIZE, SUPERSAMPLE, IMAGE_SIZE, SUPERSAMPLE, 3).mean(axis=(1, 3))
    return (image / 255.0).astype(np.float32)


@dataclass(frozen=True)
class Batch:
    images: np.ndarray            # [N, 3, 32, 32] float32 in [-1, 1] (the VAE's range)
    captions: list[str]
    labels: dict[str, np.ndarray]  # attribute name -> [N] int64 class indices
    scenes: list[Scene]


def render_batch(rng: np.random.Generator, n: int, heldout: bool | None = False,
                 omit_probability: float = 0.0) -> Batch:
    """`n` random scenes, their images, captions and labels; all drawn from `rng`."""
    scenes = [sample_scene(rng, heldout) for _ in range(n)]
    return batch_of(scenes, rng, omit_probability)


def batch_of(scenes: list[Scene], rng: np.random.Generator, omit_probability: float = 0.0) -> Batch:
    images = np.stack([render(s, rng) for s in scenes]).transpose(0, 3, 1, 2) * 2.0 - 1.0
    captions = [caption(s, rng, omit_probability) for s in scenes]
    labels = {name: np.array([s.labels()[name] for s in scenes], np.int64) for name in ATTRIBUTES}
    return Batch(images.astype(np.float32), captions, labels, scenes)


# ---- prompt sets ---------------------------------------------------------------------------------

def heldout_scenes(n: int = 32, seed: int = 1234) -> list[Scene]:
    """`n` scenes whose (shape, colour) pair was never seen in training, cycling through the pairs."""
    rng = np.random.default_rng(seed)
    scenes = []
    for i in range(n):
        shape, colour = HELDOUT_PAIRS[i % len(HELDOUT_PAIRS)]
        rest = {name: values[rng.integers(len(values))] for name, values in ATTRIBUTES.items()
                if name not in ("shape", "colour")}
        scenes.append(Scene(shape=shape, colour=colour, **rest))
    return scenes


def training_scenes(n: int = 64, seed: int = 4321) -> list[Scene]:
    rng = np.random.default_rng(seed)
    return [sample_scene(rng, heldout=False) for _ in range(n)]


def prompt_lines(scenes: list[Scene], seed: int) -> list[str]:
    """One full caption per scene (every attribute stated), sentence forms drawn from `seed`."""
    rng = np.random.default_rng(seed)
    return [caption(s, rng, omit_probability=0.0) for s in scenes]


def write_prompt_files(directory: str | Path) -> list[Path]:
    """shapes_heldout.txt (32 unseen combinations) and shapes_calibration.txt (64 training ones)."""
    directory = Path(directory)
    files = {"shapes_heldout.txt": prompt_lines(heldout_scenes(32), seed=1),
             "shapes_calibration.txt": prompt_lines(training_scenes(64), seed=2)}
    written = []
    for name, lines in files.items():
        path = directory / name
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Shapes dataset tools.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("write-prompts", help="write shapes_heldout.txt and shapes_calibration.txt")
    p.add_argument("directory", nargs="?", default=str(Path(__file__).parent / "prompts"))
    args = parser.parse_args(argv)
    for path in write_prompt_files(args.directory):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
