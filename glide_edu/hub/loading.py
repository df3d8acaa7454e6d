"""Reading and strictly loading checkpoint files: ``torch.load(weights_only=True)``, key/shape checks, models.

:func:`read_state_dict` refuses a pickle that would run code (and never runs it), and tells a truncated,
damaged or foreign file from a state dict. :func:`check_state_dict` compares keys and shapes with the model
a registry entry describes. :func:`load_checkpoint` and :func:`load_clip` build the model on the ``meta``
device and assign the loaded tensors to it, so the weights are never allocated twice.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Collection, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from glide_edu.hub.cache import forget
from glide_edu.hub.downloads import download, is_url
from glide_edu.hub.errors import (
    CheckpointError,
    CorruptCheckpointError,
    UnsafeCheckpointError,
    WrongKindError,
    os_message,
)
from glide_edu.hub.registry import CHECKPOINTS, KINDS, Checkpoint, detect_kind, entry_for
from glide_edu.nn.clip import NoisedClip

__all__ = ["check_state_dict", "load_checkpoint", "load_clip", "read_state_dict"]


def _first_line(text: str, limit: int = 160) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def read_state_dict(path: str | os.PathLike[str], what: str | None = None) -> dict[str, Tensor]:
    """``torch.load(path, map_location="cpu", weights_only=True)`` (memory-mapped when possible), checked.

    Raises :class:`UnsafeCheckpointError` for a pickle that would run code, :class:`CorruptCheckpointError`
    for a truncated, damaged or foreign file, :class:`WrongKindError` when it holds no state dict, and
    :class:`CheckpointError` when the file is missing or cannot be read. ``what`` names the file in messages.
    """
    path = Path(path)
    what = what or str(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(16)
    except FileNotFoundError:
        raise CheckpointError(f"{what} does not exist; check the path") from None
    except OSError as err:
        raise CheckpointError(f"cannot read {what} ({os_message(err)}); check the path and its permissions") from None
    fix = "delete it and download it again"
    if size == 0:
        raise CorruptCheckpointError(f"{what} is empty; {fix}")
    if size >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < size:
        raise CorruptCheckpointError(
            f"{what} is a safetensors file, not a torch.save checkpoint; load it with safetensors.torch.load_file "
            "(or glide_edu.pretrained.load_small_checkpoint for the book's own checkpoints)"
        )
    is_zip = head[:4] == b"PK\x03\x04"
    if is_zip and not zipfile.is_zipfile(path):
        raise CorruptCheckpointError(f"{what} is truncated (its zip directory is missing, {size} bytes); {fix}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except Exception as err:  # torch raises many types for bad files; all mean the same here
        text = str(err)
        if "Weights only load failed" in text and re.search(r"GLOBAL|global", text):
            match = re.search(r"GLOBAL ([\w.]+)", text)
            reason = f"it names {match.group(1)}" if match else "it names a Python object"
            raise UnsafeCheckpointError(
                f"refused to load {what}: its pickle would import or call Python code ({reason}); only plain "
                "state dicts of tensors are accepted - if you trust the file, load it yourself with "
                "torch.load(weights_only=False) and torch.save its state_dict()"
            ) from None
        raise CorruptCheckpointError(
            f"{what} is not a readable torch.save checkpoint ({type(err).__name__}: {_first_line(text) or 'no detail'})"
            f"; the file is truncated, damaged or of another format - {fix}"
        ) from None
    if not isinstance(obj, Mapping):
        raise WrongKindError(
            f"{what} holds a {type(obj).__name__}, not a state dict; save model.state_dict() rather than the model"
        )
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        nested = [k for k in bad if isinstance(obj[k], Mapping)]
        hint = (
            f"it looks like a training checkpoint (entries {nested[:4]}); save the model's state dict alone"
            if nested
            else "expected a dict of tensors"
        )
        raise WrongKindError(
            f"{what} is not a plain state dict ({len(bad)} non-tensor entries, e.g. {bad[0]!r}); {hint}"
        )
    return dict(obj)


def _load_hint(kind: str) -> str:
    if kind == "clip":
        return "load_checkpoint(path, kind='clip')"
    return f"load_checkpoint({kind!r}) (or kind={kind!r} for a file or URL)"


def check_state_dict(state_dict: Mapping[str, Tensor], entry: Checkpoint, what: str = "the checkpoint") -> None:
    """Raise :class:`WrongKindError` unless ``state_dict`` has exactly the keys and shapes of ``entry``'s model."""
    detected, evidence = detect_kind(state_dict)
    if detected != entry.kind:
        if detected is None:
            raise WrongKindError(
                f"{what} is not a {entry.kind} checkpoint: {evidence}; expected the file of {entry.name!r}"
            )
        raise WrongKindError(
            f"{what}: this looks like a {detected} checkpoint ({evidence}), not {entry.kind}; "
            f"load it as {_load_hint(detected)}"
        )
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in entry.build().state_dict().items()}
    _compare(state_dict, expected, entry, what)


def fit_problems(state_dict: Mapping[str, Tensor], expected: Mapping[str, tuple], fresh: Collection[str] = ()
                 ) -> list[str]:
    """How ``state_dict`` fails to fit a model whose weights have the shapes ``expected`` (name → shape): counts of
    missing, unexpected and reshaped weights, each with a first example; [] when it fits. ``fresh`` names weights
    the model may have and the file lack."""
    missing = [k for k in expected if k not in state_dict and k not in fresh]
    extra = [k for k in state_dict if k not in expected]
    shapes = [f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(expected[k])}"
              for k in expected if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k])]
    return [f"{len(items)} {kind} (e.g. {items[0]})" for items, kind in
            ((missing, "missing"), (extra, "unexpected"), (shapes, "of another shape")) if items]


def _compare(state_dict: Mapping[str, Tensor], expected: Mapping[str, tuple], entry: Checkpoint, what: str) -> None:
    problems = fit_problems(state_dict, expected)
    if not problems:
        return
    raise WrongKindError(
        f"{what} is a {entry.kind} checkpoint but does not fit the {entry.name!r} preset ({'; '.join(problems)}); "
        "it was made with other options - pass registry={name: Checkpoint(..., options=<its options>)}"
    )


def _assign(
    model: nn.Module, state_dict: Mapping[str, Tensor], device: torch.device | str, dtype: torch.dtype | None
) -> nn.Module:
    """Load ``state_dict`` strictly into a meta-device ``model`` by assignment (no second allocation)."""
    targets = model.state_dict()
    converted = {}
    for key, value in state_dict.items():
        want = (dtype or targets[key].dtype) if value.is_floating_point() and key in targets else None
        converted[key] = value.to(device=device, dtype=want)
    model.load_state_dict(converted, strict=True, assign=True)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise CheckpointError(f"internal error: {left[0]} was not loaded (still on the meta device)")
    return model.eval()


def _prepare(
    source: str | os.PathLike[str],
    kind: str | None,
    registry: Mapping[str, Checkpoint],
    cache_dir: str | os.PathLike[str] | None,
    progress: bool,
) -> tuple[Checkpoint | None, dict[str, Tensor], str]:
    """(entry or None for a whole-CLIP file, checked state dict, description) of a name, URL or path."""
    text = os.fspath(source)
    if isinstance(source, str) and text in registry:
        if kind is not None and kind != registry[text].kind:
            raise CheckpointError(f"kind={kind!r} contradicts {text!r} (a {registry[text].kind}); drop kind=")
        entry: Checkpoint | None = registry[text]
        path = download(text, cache_dir, progress, registry=registry)
        cached = True
    else:
        entry = None
        cached = is_url(text)
        path = download(text, cache_dir, progress, registry=registry)
    what = text if entry is not None or not cached else f"{text} (cached at {path})"
    try:
        state_dict = read_state_dict(path, what)
        if entry is None:
            wanted = kind or detect_kind(state_dict)[0]
            if wanted is None:
                raise WrongKindError(
                    f"{what}: cannot tell which model this is ({detect_kind(state_dict)[1]}); pass kind= one of "
                    f"{[*KINDS, 'clip']}"
                )
            if wanted != "clip":
                entry = entry_for(wanted, registry)
        if entry is not None:
            check_state_dict(state_dict, entry, what)
        else:
            _check_whole_clip(state_dict, registry, what)
    except (UnsafeCheckpointError, CorruptCheckpointError) as err:
        if not cached or not path.is_file():
            raise
        forget(path, cache_dir)  # never keep a damaged or unsafe download in the cache
        raise type(err)(f"{err} [the file was removed from the cache]") from None
    return entry, state_dict, what


def _check_whole_clip(state_dict: Mapping[str, Tensor], registry: Mapping[str, Checkpoint], what: str) -> None:
    detected, evidence = detect_kind(state_dict)
    if detected != "clip":
        raise WrongKindError(f"{what}: this looks like a {detected} checkpoint ({evidence}), not a whole CLIP")
    image, text = entry_for("clip/image-enc", registry), entry_for("clip/text-enc", registry)
    for entry, prefix in ((image, "image_encoder."), (text, "text_encoder.")):
        part = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
        check_state_dict(part, entry, f"{what} ({prefix[:-1]})")


def load_checkpoint(
    name_or_path: str | os.PathLike[str],
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    *,
    kind: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    registry: Mapping[str, Checkpoint] | None = None,
) -> nn.Module:
    """The model of a checkpoint, in eval mode, with its weights loaded strictly.

    ``name_or_path``: a registry name (downloaded once, see :func:`download`); ``"clip"`` for both CLIP
    encoders (a :class:`~glide_edu.nn.clip.NoisedClip`); an http(s) URL; or a local file. For URLs and files
    the kind is read from the keys unless ``kind=`` names it (a registry name such as ``"upsample"``, or
    ``"clip"`` for a file holding a whole NoisedClip state dict). GLIDE kinds give the UNet of
    :func:`~glide_edu.nn.presets.create_glide_model`; ``"clip/image-enc"`` / ``"clip/text-enc"`` give the
    single encoder. The model is built on the ``meta`` device and the loaded tensors are assigned to it
    (memory-mapped from the file on CPU), so weights are never allocated twice. ``dtype`` converts the
    floating-point weights (plain ``.to``; the reference's fp16 mode keeps norms in float32).

    Every failure is a :class:`CheckpointError`: those of :func:`download` and :func:`read_state_dict`, an
    unknown or contradicting ``kind=``, and :class:`WrongKindError` when the weights do not fit the model.
    """
    registry = CHECKPOINTS if registry is None else registry
    if isinstance(name_or_path, str) and name_or_path == "clip" and "clip" not in registry:
        return load_clip(device=device, dtype=dtype, cache_dir=cache_dir, progress=progress, registry=registry)
    entry, state_dict, _ = _prepare(name_or_path, kind, registry, cache_dir, progress)
    if entry is None:  # a whole NoisedClip in one file
        image = entry_for("clip/image-enc", registry)
        logit_scale = state_dict.pop("logit_scale", None)
        with torch.device("meta"):
            model = NoisedClip(dict(image.options))
        _assign(model, state_dict, device, dtype)
        if logit_scale is not None:
            model.logit_scale = float(logit_scale)
        return model
    with torch.device("meta"):
        model = entry.build()
    return _assign(model, state_dict, device, dtype)


def load_clip(
    image: str | os.PathLike[str] = "clip/image-enc",
    text: str | os.PathLike[str] = "clip/text-enc",
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    *,
    logit_scale: float | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    registry: Mapping[str, Checkpoint] | None = None,
) -> NoisedClip:
    """GLIDE's noised CLIP from its two released state dicts (names, URLs or paths), in eval mode.

    The logit scale is not in either file: it is log(100) (rounded to float32, as the reference keeps it)
    unless ``logit_scale`` (the log value) is given. Failures raise :class:`CheckpointError` (or a subclass), as for
    :func:`load_checkpoint`.
    """
    registry = CHECKPOINTS if registry is None else registry
    image_entry, image_sd, _ = _prepare(image, "clip/image-enc", registry, cache_dir, progress)
    text_entry, text_sd, _ = _prepare(text, "clip/text-enc", registry, cache_dir, progress)
    assert image_entry is not None and text_entry is not None
    if dict(image_entry.options) != dict(text_entry.options):
        raise CheckpointError(
            f"the CLIP encoders {image_entry.name!r} and {text_entry.name!r} are registered with different configs; "
            "register both with the same clip config"
        )
    with torch.device("meta"):
        model = NoisedClip(dict(image_entry.options))
    _assign(model.image_encoder, image_sd, device, dtype)
    _assign(model.text_encoder, text_sd, device, dtype)
    if logit_scale is not None:
        model.logit_scale = float(logit_scale)
    return model.eval()
