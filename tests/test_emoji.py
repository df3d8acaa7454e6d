"""The captioned emoji dataset: parsing emoji-test.txt, the compositional families and their held-out split,
the shipped data/emoji_32.npz, and rendering (skipped where the Debian emoji font is not installed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from glide_edu import emoji
from glide_edu.emoji import family_of, heldout_split, load_emoji, parse_emoji_test
from glide_edu.fileio import asset_path, sha256_file

SNIPPET = """\
# emoji-test.txt
# Version: 15.0

# group: Smileys & Emotion

# subgroup: face-smiling
1F600                                                  ; fully-qualified     # 😀 E1.0 grinning face
263A FE0F                                              ; fully-qualified     # ☺️ E0.6 smiling face
263A                                                   ; unqualified         # ☺ E0.6 smiling face

# group: People & Body

# subgroup: person-role
1F469 200D 2708 FE0F                                   ; fully-qualified     # 👩‍✈️ E4.0 woman pilot
1F469 200D 2708                                        ; minimally-qualified # 👩‍✈ E4.0 woman pilot
1F469 1F3FB 200D 2708 FE0F                             ; fully-qualified     # 👩🏻‍✈️ E4.0 woman pilot: light skin tone

# group: Component

# subgroup: skin-tone
1F3FB                                                  ; component           # 🏻 E1.0 light skin tone
1F9B0                                                  ; fully-qualified     # 🦰 E11.0 red hair

# group: Symbols

# subgroup: keycap
0023 FE0F 20E3                                         ; fully-qualified     # #️⃣ E0.6 keycap: #
1F7E3                                                  ; fully-qualified     # 🟣 E12.0 purple circle
"""

needs_font = pytest.mark.skipif(
    not (emoji.FONT_PATH.is_file() and emoji.EMOJI_TEST_PATH.is_file()),
    reason=f"the Debian emoji font or emoji-test.txt is not installed ({emoji.INSTALL_HINT})",
)


@pytest.fixture(scope="module")
def shipped() -> dict[str, np.ndarray]:
    with np.load(asset_path("emoji_32.npz"), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _ink_width(image: np.ndarray) -> int:
    """Width of the non-white part of an (H, W, 3) uint8 image."""
    cols = np.nonzero((image != 255).any(axis=(0, 2)))[0]
    return int(cols[-1] - cols[0] + 1)


def test_parse_keeps_fully_qualified_with_groups_and_skips_component(tmp_path) -> None:
    path = tmp_path / "emoji-test.txt"
    path.write_text(SNIPPET, encoding="utf-8")
    entries = parse_emoji_test(path)
    assert [e.name for e in entries] == [
        "grinning face", "smiling face", "woman pilot", "woman pilot: light skin tone", "keycap: #", "purple circle",
    ]  # fmt: skip
    pilot = entries[2]
    assert (pilot.codepoints, pilot.group, pilot.subgroup) == ("1F469 200D 2708 FE0F", "People & Body", "person-role")
    assert pilot.text == "\U0001f469\u200d\u2708\ufe0f"
    assert (entries[4].group, entries[4].subgroup, entries[4].text) == ("Symbols", "keycap", "#\ufe0f\u20e3")
    assert all(e.group != "Component" for e in entries)  # even a (hypothetically) fully-qualified "red hair"
    path.write_text(SNIPPET + "1F34E ; fully-qualified # 🍏 E0.6 red apple\n", encoding="utf-8")
    with pytest.raises(ValueError, match="do not spell"):
        parse_emoji_test(path)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("woman pilot: light skin tone", ("skin-tone", "woman pilot", "light skin tone")),
        ("man: medium-dark skin tone, beard", ("skin-tone", "man: beard", "medium-dark skin tone")),
        ("handshake: light skin tone, dark skin tone", ("skin-tone", "handshake", "light skin tone, dark skin tone")),
        ("kiss: woman, man, dark skin tone", ("skin-tone", "kiss: woman, man", "dark skin tone")),
        ("woman pilot", ("gender-role", "woman", "pilot")),
        ("person in tuxedo", ("gender-role", "person", "in tuxedo")),
        ("men holding hands", ("gender-role", "men", "holding hands")),
        ("man: red hair", ("gender-role", "man", "red hair")),
        ("purple heart", ("colour-shape", "purple", "heart")),
        ("light blue heart", ("colour-shape", "light blue", "heart")),
        ("black small square", ("colour-shape", "black", "small square")),
        ("small blue diamond", ("colour-shape", "blue", "small diamond")),
        ("red apple", None),
        ("woman and man holding hands", None),
        ("man", None),
        ("mango", None),
        ("man’s shoe", None),
        ("black square button", None),
        ("red triangle pointed up", None),
    ],
)
def test_family_of(name: str, expected: tuple[str, str, str] | None) -> None:
    assert family_of(name) == expected


def test_heldout_split_keeps_factors_in_train_and_is_deterministic() -> None:
    names, fams = [], []
    for colour in ("red", "green", "blue", "pink", "grey"):
        for shape in ("heart", "circle", "square", "star"):
            names.append(f"{colour} {shape}")
            fams.append(("colour-shape", colour, shape))
    names += ["lonely hat", "apple"]
    fams += [("colour-shape", "mauve", "hat"), None]  # a factor seen once can never be held out
    split = heldout_split(names, fams, fraction=0.25)
    assert split == heldout_split(list(names), list(fams), fraction=0.25)
    held = [f for f, s in zip(fams, split, strict=True) if s == "heldout"]
    train = [f for f, s in zip(fams, split, strict=True) if s == "train" and f is not None]
    assert len(held) == round(0.25 * 21) and split[-2:] == ["train", "train"]
    for _, a, b in held:
        assert any(t[1] == a for t in train) and any(t[2] == b for t in train)


def test_heldout_gendered_name_takes_its_skin_tones_along() -> None:
    names = ["man cook", "woman cook", "man pilot", "woman pilot"]
    names += [f"{n}: {t} skin tone" for n in names for t in emoji.TONES]
    fams = [family_of(n) for n in names]
    split = heldout_split(names, fams, fraction=0.5)  # 2 of the 4 gender-role combinations
    held_people = {n for n, s in zip(names[:4], split[:4], strict=True) if s == "heldout"}
    assert len(held_people) == 2
    for name, s in zip(names[4:], split[4:], strict=True):
        if name.split(":")[0] in held_people:
            assert s == "heldout", name


def test_shipped_arrays(shipped: dict[str, np.ndarray]) -> None:
    images, captions = shipped["images"], shipped["captions"]
    n = len(captions)
    assert n >= 3000 and images.shape == (n, 32, 32, 3) and images.dtype == np.uint8
    for key in ("captions", "codepoints", "groups", "subgroups", "split", "family", "factor_a", "factor_b"):
        assert shipped[key].shape == (n,) and shipped[key].dtype.kind == "U", key
    assert len(set(captions.tolist())) == n  # CLDR names are unique in emoji-test.txt 15.0
    assert len(set(shipped["codepoints"].tolist())) == n
    assert ((images != 255).any(axis=-1).sum(axis=(1, 2)) > 0).all()  # every picture has ink
    assert "Component" not in set(shipped["groups"].tolist())
    meta = json.loads(str(shipped["meta"][0]))
    assert meta["count"] == n and meta["size"] == 32
    assert meta["splits"]["heldout"] == (shipped["split"] == "heldout").sum()
    assert meta["skipped_unrenderable"]["count"] == len(meta["skipped_unrenderable"]["names"])
    assert {"sha256", "version"} <= set(meta["font"]) and {"sha256", "version"} <= set(meta["emoji_test"])


def test_shipped_families_and_heldout_invariants(shipped: dict[str, np.ndarray]) -> None:
    captions = shipped["captions"].tolist()
    split, fams = shipped["split"].tolist(), shipped["family"].tolist()
    a, b = shipped["factor_a"].tolist(), shipped["factor_b"].tolist()
    for i, name in enumerate(captions):  # the stored families are family_of's
        assert (family_of(name) or ("", "", "")) == (fams[i], a[i], b[i]), name
    assert all(s in ("train", "heldout") for s in split)
    assert all(s == "train" for s, f in zip(split, fams, strict=True) if f == ""), "held-out emoji outside the families"
    held_names = {c for c, s in zip(captions, split, strict=True) if s == "heldout"}
    for family in emoji.FAMILIES:
        idx = [i for i, f in enumerate(fams) if f == family]
        train_a = {a[i] for i in idx if split[i] == "train"}
        train_b = {b[i] for i in idx if split[i] == "train"}
        held = [i for i in idx if split[i] == "heldout"]
        assert 0.05 <= len(held) / len(idx) <= 0.20, (family, len(held), len(idx))
        for i in held:
            assert b[i] in train_b, captions[i]
            # skin-tone forms of a held-out emoji ("woman pilot" held out → "woman pilot: dark skin tone")
            # are held out with it, so their base appears in no training emoji of the family
            assert a[i] in train_a or (family == "skin-tone" and a[i] in held_names), captions[i]


def test_load_emoji_splits_partition_all() -> None:
    every = load_emoji("all")
    train, held = load_emoji("train"), load_emoji("heldout")
    n = len(every.captions)
    assert every.images.shape == (n, 3, 32, 32) and every.images.dtype == torch.float32
    assert every.images.min() >= -1 and every.images.max() <= 1 and every.images.max() == 1  # white is +1
    assert len(train.captions) + len(held.captions) == n and len(held.captions) > 0
    assert set(train.captions) | set(held.captions) == set(every.captions)
    assert not set(train.captions) & set(held.captions)
    assert set(held.split) == {"heldout"} and held.images.shape[0] == len(held.family)
    assert every.meta["count"] == n
    with pytest.raises(ValueError, match="unknown split 'test'"):
        load_emoji("test")
    with pytest.raises(FileNotFoundError, match="build --size 7"):
        load_emoji("all", size=7)


def test_shipped_zwj_sequence_is_one_glyph(shipped: dict[str, np.ndarray]) -> None:
    index = {c: i for i, c in enumerate(shipped["captions"].tolist())}
    single = _ink_width(shipped["images"][index["grinning face"]])
    for name in ("woman pilot", "family: man, woman, girl, boy", "flag: England", "woman pilot: dark skin tone"):
        assert 0.75 * single <= _ink_width(shipped["images"][index[name]]) <= 1.25 * single, name


def test_missing_sources_name_the_debian_packages(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="apt-get install fonts-noto-color-emoji unicode-data"):
        emoji.build_emoji_dataset(tmp_path / "x.npz", font_path=tmp_path / "none.ttf", emoji_test_path=tmp_path / "t")
    assert not (tmp_path / "x.npz").exists()


@needs_font
def test_render_one_glyph_and_refuse_what_the_font_lacks() -> None:
    font = emoji.load_font()
    apple = emoji.render_emoji(font, "\U0001f34e")
    assert apple.shape == (32, 32, 3) and apple.dtype == np.uint8 and (apple == 255).any() and (apple < 128).any()
    pilot = emoji.render_emoji(font, "\U0001f469\u200d\u2708\ufe0f")
    assert 0.75 <= _ink_width(pilot) / _ink_width(emoji.render_emoji(font, "\U0001f600")) <= 1.25
    assert emoji.render_emoji(font, "\U0001f34e", size=16).shape == (16, 16, 3)
    small, large = emoji.render_emoji(font, "\u25aa\ufe0f"), emoji.render_emoji(font, "\u2b1b")
    assert _ink_width(small) < 0.5 * _ink_width(large)  # the sizes of the squares survive the crop
    unknown_tag_flag = "\U0001f3f4" + "".join(chr(0xE0000 + ord(c)) for c in "xxxx") + "\U000e007f"
    for text in ("\U0001f469\u200d\U0001f996", "\U0001f600\U0001f600", "\U0010fffd", "\U0001f1e6\U0001f1e6",
                 unknown_tag_flag):  # fmt: skip
        with pytest.raises(emoji.UnrenderableEmoji):
            emoji.render_emoji(font, text)


@needs_font
def test_shipped_images_match_a_fresh_render(shipped: dict[str, np.ndarray]) -> None:
    meta = json.loads(str(shipped["meta"][0]))
    from PIL import __version__ as pillow_version
    from PIL import features

    same = sha256_file(emoji.FONT_PATH) == meta["font"]["sha256"] and meta["renderer"] == {
        "pillow": pillow_version, "freetype2": features.version("freetype2"), "raqm": features.version("raqm"),
        "strike_size": emoji.STRIKE_SIZE,
    }  # fmt: skip
    if not same:
        pytest.skip("this font or Pillow/FreeType differs from the one the shipped file was built with")
    index = {c: i for i, c in enumerate(shipped["captions"].tolist())}
    font = emoji.load_font()
    for name in ("red apple", "woman pilot: light skin tone", "flag: Scotland", "black small square"):
        i = index[name]
        text = "".join(chr(int(cp, 16)) for cp in str(shipped["codepoints"][i]).split())
        np.testing.assert_array_equal(emoji.render_emoji(font, text), shipped["images"][i], err_msg=name)


@needs_font
def test_build_small_file_is_reproducible_and_loads(tmp_path, capsys) -> None:
    source = tmp_path / "emoji-test.txt"
    source.write_text(SNIPPET, encoding="utf-8")
    out_a, out_b = tmp_path / "a.npz", tmp_path / "b.npz"
    emoji.main(["build", "--out", str(out_a), "--emoji-test", str(source)])
    assert "6 emoji" in capsys.readouterr().out
    meta = emoji.build_emoji_dataset(out_b, emoji_test_path=source)
    assert out_a.read_bytes() == out_b.read_bytes()  # byte-identical, zip entries included
    assert meta["count"] == 6 and meta["emoji_test"]["emoji_version"] == "15.0"
    data = load_emoji("all", path=out_a)
    assert data.captions[2] == "woman pilot" and data.family[3] == "skin-tone" and data.images.shape == (6, 3, 32, 32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "b.npz", "emoji-test.txt"]  # no temp files left
