"""Captioned emoji: every fully-qualified emoji of Unicode 15.0 as a 32×32 picture with its CLDR name.

The images are renderings of the Noto Color Emoji font (SIL OFL 1.1, Debian ``fonts-noto-color-emoji``);
the captions, groups and subgroups come from Unicode's ``emoji-test.txt`` (Debian ``unicode-data``). The
built file ships as ``data/emoji_32.npz`` (see ``data/NOTICE-emoji.md``); :func:`load_emoji` reads it and
``python -m glide_edu.emoji build`` rebuilds it where the two Debian packages are installed.

Three *compositional families* are parsed from the names (:func:`family_of`) so a text-conditional model can
be tested on combinations it never saw: skin tone × person or body part ("woman pilot: light skin tone"),
gender × role ("man pilot", "woman pilot") and colour × shape ("purple heart", "white large square").
Within each family about 10 % of the combinations are held out (:func:`heldout_split`); each held-out
combination's two factors still appear, in other combinations, in the training set (and the skin-tone
forms of a held-out "woman pilot" are held out with it).

Images from :func:`load_emoji` are float32 NCHW tensors in [−1, 1], the book's convention.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
from collections import Counter, defaultdict
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from torch import Tensor

from .fileio import asset_path, atomic_write, sha256_file

if TYPE_CHECKING:
    from PIL import Image, ImageFont

FONT_PATH = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
EMOJI_TEST_PATH = Path("/usr/share/unicode/emoji/emoji-test.txt")
INSTALL_HINT = "apt-get install fonts-noto-color-emoji unicode-data"
STRIKE_SIZE = 109  # the one bitmap strike (pixels per em) of the CBDT font: no scaling of the bitmaps
SPLITS = ("train", "heldout", "all")
FAMILIES = ("skin-tone", "gender-role", "colour-shape")
HELDOUT_FRACTION = 0.10
# "Component" holds the bare skin-tone swatches (🏻…🏿) and hair pieces (🦰 🦱 🦳 🦲): building blocks of
# sequences, not pictures of anything, and a model would learn nothing from a caption like "red hair" on
# a lone hair tuft. In emoji-test.txt 15.0 their status is "component", so the fully-qualified filter
# already drops them; skipping the group by name keeps them out should a later file qualify them.
SKIPPED_GROUP = "Component"
TONES = ("light", "medium-light", "medium", "medium-dark", "dark")
GENDERS = ("man", "woman", "person", "men", "women", "people")
COLOURS = ("light blue", *"red orange yellow green blue purple brown black white pink grey".split())
SIZES = ("large", "medium", "medium-small", "small")
SHAPES = ("heart", "circle", "square", "diamond")
# Tag characters (subdivision flags), VS16 and ZWJ draw nothing: a font that ignores them draws the base alone.
INVISIBLE = {0xFE0F, 0x200D, *range(0xE0020, 0xE0080)}
# What a font draws for what it lacks: .notdef (tofu) for a private-use code point no emoji font maps, and
# the "unknown flag" for a region pair that is no country (Noto: a white flag with a question mark).
FALLBACK_PROBES = ("\U0010fffd", "\U0001f1e6\U0001f1e6")

_ROLE_RE = re.compile(rf"({'|'.join(GENDERS)}):? (.+)")
_SHAPE_RE = re.compile(rf"(?:(large|small) )?({'|'.join(COLOURS)}) (?:({'|'.join(SIZES)}) )?({'|'.join(SHAPES)})")
_LINE_RE = re.compile(r"\s*(\S+)\s+E\d+\.\d+\s+(.+?)\s*")


class EmojiEntry(NamedTuple):
    """One fully-qualified emoji: code points as written in emoji-test.txt ("1F469 200D 2708 FE0F"), its
    CLDR name ("woman pilot"), and the group and subgroup headers it sits under."""

    codepoints: str
    name: str
    group: str
    subgroup: str

    @property
    def text(self) -> str:
        """The emoji itself, as a Python string."""
        return "".join(chr(int(cp, 16)) for cp in self.codepoints.split())


class EmojiData(NamedTuple):
    """The shipped emoji of one split: images (N, 3, size, size) float32 in [−1, 1], and per image its
    caption (CLDR name), code points, group, subgroup, split, family and two factors ("" outside the
    families); ``meta`` records the sources (package versions, SHA-256s) and the build's counts."""

    images: Tensor
    captions: list[str]
    codepoints: list[str]
    groups: list[str]
    subgroups: list[str]
    split: list[str]
    family: list[str]
    factor_a: list[str]
    factor_b: list[str]
    meta: dict


class UnrenderableEmoji(ValueError):
    """The font cannot draw this sequence as one glyph (it draws tofu, nothing, or several glyphs)."""


def parse_emoji_test(path: str | Path = EMOJI_TEST_PATH) -> list[EmojiEntry]:
    """The fully-qualified emoji of ``emoji-test.txt`` in file (CLDR) order, without the Component group.

    A line reads ``1F34E ; fully-qualified # 🍎 E0.6 red apple``: code points; status # emoji, version, name.
    Malformed lines raise a one-line ValueError naming the file and line.
    """
    group = subgroup = ""
    entries = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if line.startswith("# group:"):
            group = line.partition(":")[2].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.partition(":")[2].strip()
        if not line.strip() or line.startswith("#"):
            continue
        fields, _, comment = line.partition("#")  # code points never contain "#"; the keycap name may
        codes, _, status = fields.partition(";")
        match = _LINE_RE.fullmatch(comment)
        codepoints = " ".join(codes.split())
        if match is None or not codepoints:
            raise ValueError(f"{path}:{number}: cannot parse {line.strip()!r}")
        if status.strip() != "fully-qualified" or group == SKIPPED_GROUP:
            continue
        entry = EmojiEntry(codepoints, match[2], group, subgroup)
        if entry.text != match[1]:
            raise ValueError(f"{path}:{number}: code points {codepoints} do not spell {match[1]!r}")
        entries.append(entry)
    return entries


def split_skin_tone(name: str) -> tuple[str, str]:
    """(name without its skin tones, the tones) — ("man: beard", "light skin tone") for "man: light skin
    tone, beard", ("handshake", "light skin tone, dark skin tone") for a two-tone name, (name, "") if none."""
    head, sep, tail = name.partition(": ")
    parts = tail.split(", ") if sep else []
    tones = [p for p in parts if p.endswith(" skin tone") and p.removesuffix(" skin tone") in TONES]
    if not tones:
        return name, ""
    rest = [p for p in parts if p not in tones]
    return head + (": " + ", ".join(rest) if rest else ""), ", ".join(tones)


def family_of(name: str) -> tuple[str, str, str] | None:
    """The compositional family of a CLDR name as (family, factor_a, factor_b), or None.

    * ``skin-tone``: "X: <tone> skin tone" (or two tones) → (X, tones); checked first, so it also takes the
      toned forms of gendered names ("woman pilot: light skin tone" → ("woman pilot", "light skin tone")).
    * ``gender-role``: "man|woman|person|men|women|people <role>" or "<gender>: <hair>" → (gender, role),
      e.g. "woman pilot" → ("woman", "pilot"), "man: red hair" → ("man", "red hair"); "woman and man
      holding hands" is two genders and is left out.
    * ``colour-shape``: "<colour> heart|circle|square", "black|white <size> square" and "<size> <colour>
      diamond" → (colour, shape with its size), e.g. "black small square" → ("black", "small square").
      The size stays in the shape because the images keep it (see :func:`render_emoji`).
    """
    base, tones = split_skin_tone(name)
    if tones:
        return "skin-tone", base, tones
    role = _ROLE_RE.fullmatch(base)
    if role and not role[2].startswith("and "):
        return "gender-role", role[1], role[2]
    shape = _SHAPE_RE.fullmatch(base)
    if shape:
        return "colour-shape", shape[2], " ".join(s for s in (shape[1] or shape[3], shape[4]) if s)
    return None


def heldout_split(
    names: Sequence[str], families: Sequence[tuple[str, str, str] | None], fraction: float = HELDOUT_FRACTION
) -> list[str]:
    """The split of each emoji, "train" or "heldout": within each family about ``fraction`` of its
    (factor_a, factor_b) combinations are held out; all emoji outside the families are "train".

    Combinations are taken in the order of the SHA-256 of (family, factor_a, factor_b) — the same on every
    machine and Python — and one is held out only if both its factors still appear in a training
    combination of the family; otherwise it stays in train and the next one is tried. The skin-tone forms
    of a held-out emoji (e.g. "woman pilot: dark skin tone" when "woman pilot" is held out) are held out
    with it, since they show the very combination; they count towards the skin-tone family's share.
    """
    split = ["train"] * len(names)
    members: dict[str, dict[tuple[str, str], list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, fam in enumerate(families):
        if fam is not None:
            members[fam[0]][fam[1], fam[2]].append(i)
    for family in ("gender-role", "colour-shape", "skin-tone"):  # skin-tone last: it inherits hold-outs
        combos = members.get(family, {})
        held_names = {names[i] for i, s in enumerate(split) if s == "heldout"}
        held = {c for c in combos if family == "skin-tone" and c[0] in held_names}
        train = [c for c in combos if c not in held]
        count_a, count_b = Counter(a for a, _ in train), Counter(b for _, b in train)
        target = round(fraction * len(combos))
        rank = {c: hashlib.sha256("\n".join((family, *c)).encode()).hexdigest() for c in train}  # stable order
        for a, b in sorted(train, key=rank.__getitem__):
            if len(held) >= target:
                break
            if count_a[a] > 1 and count_b[b] > 1:  # both factors stay in some training combination
                held.add((a, b))
                count_a[a] -= 1
                count_b[b] -= 1
        for combo in held:
            for i in combos[combo]:
                split[i] = "heldout"
    return split


@lru_cache(maxsize=4)
def load_font(path: str | Path = FONT_PATH) -> ImageFont.FreeTypeFont:
    """The colour emoji font at its bitmap strike size, laid out by RAQM (so ZWJ sequences, skin-tone
    modifiers and flags become one glyph). Raises FileNotFoundError naming the Debian package if absent."""
    from PIL import ImageFont, features

    _require(Path(path))
    if not features.check("raqm"):
        raise RuntimeError("Pillow was built without RAQM (libraqm); emoji sequences need it to form one glyph")
    return ImageFont.truetype(str(path), STRIKE_SIZE, layout_engine=ImageFont.Layout.RAQM)


def _draw(font: ImageFont.FreeTypeFont, text: str) -> Image.Image | None:
    """``text`` drawn in colour on a transparent canvas, cropped to its alpha bounding box (None if blank)."""
    from PIL import Image, ImageDraw

    left, top, right, bottom = font.getbbox(text)
    pad = STRIKE_SIZE // 2
    canvas = Image.new("RGBA", (right - left + 2 * pad, bottom - top + 2 * pad), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((pad - left, pad - top), text, font=font, embedded_color=True)
    box = canvas.getchannel("A").getbbox()
    return None if box is None else canvas.crop(box)


@lru_cache(maxsize=4)
def _references(font: ImageFont.FreeTypeFont) -> tuple[float, int, int, set[bytes]]:
    """A single glyph's advance, width and cell height (from 😀) and the fallback drawings' bytes."""
    glyph = _draw(font, "\U0001f600")
    if glyph is None:
        raise UnrenderableEmoji("the font draws nothing for 😀 (U+1F600); is it a colour emoji font?")
    fallbacks = {g.tobytes() for g in map(lambda t: _draw(font, t), FALLBACK_PROBES) if g is not None}
    return font.getlength("\U0001f600"), glyph.width, font.getbbox("\U0001f600")[3], fallbacks


def render_emoji(font: ImageFont.FreeTypeFont | str | Path, text: str, size: int = 32) -> np.ndarray:
    """``text`` (one emoji, possibly a multi-code-point sequence) as a (size, size, 3) uint8 RGB image.

    The glyph is cropped to its alpha bounding box and centred on a white square whose side is the larger
    of the glyph's extent and the font's cell height (128 px for Noto's bitmaps): glyphs that fill the cell
    fill the picture bar a small margin, while small glyphs ("black small square" ▪️, "small blue diamond")
    stay small instead of being blown up to look like their large siblings.

    Raises :class:`UnrenderableEmoji` when the font cannot draw ``text`` as one glyph: it draws nothing, tofu
    or its unknown-flag glyph; the layout is wider than one glyph (an unknown ZWJ sequence falls apart); or
    a sequence with invisible parts (tags) looks just like its first code point (a plain black flag).
    """
    from PIL import Image

    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    if not hasattr(font, "getbbox"):
        font = load_font(font)
    advance, width, cell, fallbacks = _references(font)
    glyph = _draw(font, text)
    if glyph is None or glyph.tobytes() in fallbacks:
        raise UnrenderableEmoji(f"the font has no glyph for {text!r} (it draws nothing, tofu or a fallback)")
    if font.getlength(text) > 1.5 * advance or glyph.width > 1.5 * width:
        raise UnrenderableEmoji(f"the font draws {text!r} as several glyphs, not one")
    points = [ord(c) for c in text]
    if len(points) > 1 and all(p in INVISIBLE for p in points[1:]) and any(p != 0xFE0F for p in points[1:]):
        base = _draw(font, text[0])
        if base is not None and base.tobytes() == glyph.tobytes():
            raise UnrenderableEmoji(f"the font ignores the tail of {text!r} and draws its first code point")
    side = max(glyph.width, glyph.height, cell)
    square = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    square.alpha_composite(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2))
    rgb = square.convert("RGB")
    # Downscale by area averaging (BOX): each output pixel is the mean of the light falling on it, as a
    # camera sensor would record it. Lanczos would overshoot at the emoji's dark outlines against white and
    # leave faint halos; a box keeps flat colours exact. With the usual 128 px square and size 32 this is
    # an exact 4×4 mean; other sides are first brought to 4·size with Lanczos (a mild rescale) and then boxed.
    if rgb.size != (4 * size, 4 * size):
        rgb = rgb.resize((4 * size, 4 * size), Image.Resampling.LANCZOS)
    return np.asarray(rgb.reduce(4), dtype=np.uint8).copy()


def _require(*paths: Path) -> None:
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path} not found; install the Debian packages: {INSTALL_HINT}")


def _package_version(package: str) -> str:
    """The installed Debian package's version as dpkg-query reports it, else "unknown"."""
    try:
        done = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, text=True,
                              timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):  # no dpkg-query (not Debian), or it hung
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "unknown"


def build_emoji_dataset(
    out: str | Path, font_path: str | Path = FONT_PATH, emoji_test_path: str | Path = EMOJI_TEST_PATH, size: int = 32
) -> dict:
    """Render every fully-qualified emoji and write them, captioned and split, to ``out`` (one .npz).

    Arrays: ``images`` (N, size, size, 3) uint8; unicode string arrays ``captions``, ``codepoints``,
    ``groups``, ``subgroups``, ``split``, ``family``, ``factor_a``, ``factor_b``; and ``meta``, one JSON
    string (sources, versions, SHA-256s, counts, skipped names). The file is written atomically.
    A rebuild with the same font, file and libraries gives a byte-identical file (numpy's zip entries carry
    zipfile's fixed 1980-01-01 date, and nothing else varies). Returns the meta dict.
    """
    from PIL import __version__ as pillow_version
    from PIL import features

    font_path, emoji_test_path = Path(font_path), Path(emoji_test_path)
    _require(font_path, emoji_test_path)
    font = load_font(font_path)
    images, kept, skipped = [], [], []
    for entry in parse_emoji_test(emoji_test_path):
        try:
            images.append(render_emoji(font, entry.text, size))
            kept.append(entry)
        except UnrenderableEmoji:
            skipped.append(entry.name)
    names = [e.name for e in kept]
    families = [family_of(n) for n in names]
    split = heldout_split(names, families)
    columns = {"captions": names, "codepoints": [e.codepoints for e in kept], "groups": [e.group for e in kept],
               "subgroups": [e.subgroup for e in kept], "split": split}
    for k, key in enumerate(("family", "factor_a", "factor_b")):
        columns[key] = [f[k] if f else "" for f in families]
    arrays = {"images": np.stack(images).astype(np.uint8), **{k: np.array(v, dtype=str) for k, v in columns.items()}}
    version = re.search(r"^# Version: (\S+)", emoji_test_path.read_text(encoding="utf-8"), re.MULTILINE)
    family_counts = {}
    for fam in FAMILIES:
        rows = [(f, s) for f, s in zip(families, split, strict=True) if f is not None and f[0] == fam]
        family_counts[fam] = {"emoji": len(rows), "combinations": len({f for f, _ in rows}),
                              "heldout": sum(s == "heldout" for _, s in rows)}
    meta = {
        "font": {"file": font_path.name, "package": "fonts-noto-color-emoji", "license": "OFL-1.1",
                 "version": _package_version("fonts-noto-color-emoji"), "sha256": sha256_file(font_path)},
        "emoji_test": {"file": emoji_test_path.name, "package": "unicode-data", "license": "Unicode-3.0",
                       "version": _package_version("unicode-data"), "emoji_version": version[1] if version else "",
                       "sha256": sha256_file(emoji_test_path)},
        "renderer": {"pillow": pillow_version, "freetype2": features.version("freetype2"),
                     "raqm": features.version("raqm"), "strike_size": STRIKE_SIZE},
        "size": size,
        "count": len(kept),
        "splits": {s: split.count(s) for s in ("train", "heldout")},
        "families": family_counts,
        "heldout_fraction": HELDOUT_FRACTION,
        "skipped_unrenderable": {"count": len(skipped), "names": skipped},
    }
    arrays["meta"] = np.array([json.dumps(meta, ensure_ascii=False, sort_keys=True)], dtype=str)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: given a path, numpy would append ".npz" to the name
            np.savez_compressed(f, **arrays)

    atomic_write(out, write)
    return meta


def load_emoji(split: str = "train", size: int = 32, path: str | Path | None = None) -> EmojiData:
    """The shipped captioned emoji (``data/emoji_{size}.npz``) of one split: "train", "heldout" or "all".

    Images are (N, 3, size, size) float32 in [−1, 1]; the order is the file's (CLDR order)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    path = Path(path) if path is not None else asset_path(f"emoji_{size}.npz")
    if not path.is_file():
        raise FileNotFoundError(f"no emoji dataset at {path}; build it: python -m glide_edu.emoji build --size {size}")
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    keep = np.ones(len(arrays["captions"]), bool) if split == "all" else arrays["split"] == split
    images = torch.from_numpy(arrays["images"][keep].astype(np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2)
    fields = ("captions", "codepoints", "groups", "subgroups", "split", "family", "factor_a", "factor_b")
    columns = {k: arrays[k][keep].tolist() for k in fields}
    return EmojiData(images.contiguous(), **columns, meta=json.loads(str(arrays["meta"][0])))


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m glide_edu.emoji build [--out FILE] [--size N]``: build the dataset and print its counts."""
    parser = argparse.ArgumentParser(prog="python -m glide_edu.emoji", description=__doc__.splitlines()[0])
    build = parser.add_subparsers(dest="command", required=True).add_parser("build", help="render the emoji")
    build.add_argument("--out", type=Path, default=None, help="output file (default: the shipped data/emoji_N.npz)")
    build.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    build.add_argument("--font", type=Path, default=FONT_PATH, help=f"default {FONT_PATH}")
    build.add_argument("--emoji-test", type=Path, default=EMOJI_TEST_PATH, help=f"default {EMOJI_TEST_PATH}")
    args = parser.parse_args(argv)
    out = args.out or asset_path(f"emoji_{args.size}.npz")
    meta = build_emoji_dataset(out, args.font, args.emoji_test, args.size)
    splits, skipped = meta["splits"], meta["skipped_unrenderable"]
    print(f"wrote {out} ({Path(out).stat().st_size / 1e6:.2f} MB): {meta['count']} emoji, {splits['train']} train, "
          f"{splits['heldout']} held out; {skipped['count']} skipped as unrenderable {skipped['names']}")
    for fam, c in meta["families"].items():
        print(f"  {fam}: {c['emoji']} emoji, {c['combinations']} combinations, {c['heldout']} held out")


if __name__ == "__main__":
    main()
