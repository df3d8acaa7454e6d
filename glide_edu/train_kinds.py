"""What a ``glide-edu train`` config means, kind by kind: its sections checked and turned into the dataclasses
the trainers take (:mod:`glide_edu.train_run` reads the file and trains). Every problem is one
:class:`ConfigError` line naming the key and the fix, raised before anything is built or trained."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

# torch and the models are imported where they are used: `glide-edu --help` stays fast.

KINDS = ("unet", "glide", "clip", "classifier")
SOURCES = {"unet": ("digits", "folder"), "glide": ("book-captions", "caption-folder", "webdataset"),
           "clip": ("book-captions", "caption-folder"), "classifier": ("digits",)}
SECTIONS = ("data", "model", "diffusion", "train", "log")
# [data] keys of a GLIDE config, by source
GLIDE_DATA = {"book-captions": ("n_shapes",), "caption-folder": ("path",),
              "webdataset": ("shards", "image_size", "shuffle_buffer", "num_workers")}
# option names of the reference's model dictionaries that are about sampling, not the network or its training
SAMPLING_OPTIONS = ("timestep_respacing", "use_fp16", "cache_text_emb")


class ConfigError(ValueError):
    """A configuration file that cannot be trained (the message names the key and the fix)."""


def _dataclass(cls: type, values: dict[str, Any], section: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"[{section}] has unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    tuples = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        return cls(**tuples)
    except TypeError as err:
        raise ConfigError(f"[{section}]: {err}") from None


def check_config(config: dict[str, Any]) -> dict[str, Any]:
    """Validate the structure (one clear error for the first problem); returns the config."""
    kind = config.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"kind = {kind!r}: choose one of {', '.join(KINDS)}")
    extra = sorted(set(config) - {"kind", "description", *SECTIONS})
    if extra:
        raise ConfigError(f"unknown top-level key(s) {', '.join(extra)}; a config has kind, description and the "
                          f"sections {', '.join(SECTIONS)}")
    unknown_log = sorted(set(config.get("log", {})) - {"tensorboard"})
    if unknown_log:
        raise ConfigError(f"[log] has unknown key(s) {', '.join(unknown_log)}; known: tensorboard")
    source = config.get("data", {}).get("source")
    if source not in SOURCES[kind]:
        raise ConfigError(f"[data] source = {source!r}: a {kind} model trains on {' or '.join(SOURCES[kind])}")
    if kind == "clip":
        clip_parts(config)
        return config
    if kind == "classifier":
        classifier_parts(config)
        return config
    if kind == "glide":
        glide_parts(config)
    from glide_edu.train_config import TrainConfig

    _dataclass(TrainConfig, config.get("train", {}), "train").validate()
    return config


def clip_parts(config: dict[str, Any]) -> tuple[Any, Any]:
    """(ClipConfig, ClipTrainConfig) of a ``kind = "clip"`` config: [model] preset ("mini": the noised CLIP's and
    its control's architecture, "eval": the evaluator's) with ClipConfig fields on top; [train] ClipTrainConfig."""
    from dataclasses import replace

    from glide_edu.train_clip import EVAL_CLIP, MINI_CLIP, ClipTrainConfig

    model = dict(config.get("model", {}))
    presets = {"mini": MINI_CLIP, "eval": EVAL_CLIP}
    preset = model.pop("preset", "mini")
    if preset not in presets:
        raise ConfigError(f"[model] preset = {preset!r}: a CLIP preset is one of {', '.join(presets)}")
    known = {f.name for f in fields(MINI_CLIP)}
    if set(model) - known:
        raise ConfigError(f"[model] has unknown key(s) {', '.join(sorted(set(model) - known))}; known: preset, "
                          f"{', '.join(sorted(known))}")
    train = _dataclass(ClipTrainConfig, config.get("train", {}), "train")
    if train.steps < 1 or train.batch_size < 2 or not train.lr > 0:
        raise ConfigError(f"[train] steps = {train.steps} (≥ 1), batch_size = {train.batch_size} (≥ 2), "
                          f"lr = {train.lr} (> 0) are needed")
    return replace(presets[preset], **model), train


def glide_parts(config: dict[str, Any]) -> tuple[dict[str, Any], Any, float]:
    """(GLIDE options, GlideTask, p_uncond) of a ``kind = "glide"`` config: [model] holds the reference's option
    names over the miniature's (:data:`~glide_edu.train_text.MINI_OPTIONS`); ``super_res`` / ``inpaint`` pick
    the network; [data] ``low_res_size`` (upsamplers, default image_size / 4) and ``p_uncond`` (default 0.2,
    GLIDE's; 0 for upsamplers, which GLIDE trained without empty captions)."""
    from glide_edu.train_text import MINI_OPTIONS, P_UNCOND, GlideTask

    model, data = config.get("model", {}), config.get("data", {})
    sampling = sorted(set(model) & set(SAMPLING_OPTIONS))
    if sampling:
        raise ConfigError(f"[model] {', '.join(sampling)}: sampling-time options do not belong in a training config "
                          "(drop them; the training precision is [train] precision = 'bf16' or 'fp16')")
    known = {*MINI_OPTIONS, "super_res", "inpaint"}
    unknown = sorted(set(model) - known)
    if unknown:
        raise ConfigError(f"[model] has unknown GLIDE option(s) {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(known))}")
    options = {**MINI_OPTIONS, **model}
    source = data.get("source")
    allowed = {"source", "p_uncond", "low_res_size", *GLIDE_DATA.get(source, ())}
    if set(data) - allowed:
        raise ConfigError(f"[data] has unknown key(s) {', '.join(sorted(set(data) - allowed))} for source = "
                          f"{source!r}; known: {', '.join(sorted(allowed))}")
    try:
        task = GlideTask.from_options(options, data.get("low_res_size"))
    except (ValueError, TypeError) as err:
        raise ConfigError(f"[data] {err}") from None
    if "low_res_size" in data and not task.super_res:
        raise ConfigError("[data] low_res_size is for upsamplers; set [model] super_res = true or drop it")
    p_uncond = float(data.get("p_uncond", 0.0 if task.super_res else P_UNCOND))
    if not 0.0 <= p_uncond < 1.0:
        raise ConfigError(f"[data] p_uncond = {p_uncond}: give a probability in [0, 1) (GLIDE: 0.2, upsamplers 0)")
    if source == "webdataset":
        stream_parts(config, options)
    return options, task, p_uncond


def stream_parts(config: dict[str, Any], options: dict[str, Any]) -> Any:
    """The StreamConfig of ``source = "webdataset"`` ([data] ``shards``, ``image_size`` = the model's by default,
    ``shuffle_buffer``, ``num_workers``)."""
    from glide_edu.streaming import StreamConfig

    data = dict(config["data"])
    if "shards" not in data:
        raise ConfigError("[data] source = 'webdataset' needs shards = 'data/{00000..00099}.tar' (img2dataset's "
                          "output: tar files of <key>.jpg + <key>.txt)")
    values = {k: data[k] for k in GLIDE_DATA["webdataset"] if k in data}
    values.setdefault("image_size", int(options["image_size"]))
    if isinstance(values["shards"], list):
        values["shards"] = tuple(values["shards"])
    stream = StreamConfig(**values)
    try:
        stream.validate()
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if stream.image_size != int(options["image_size"]):
        raise ConfigError(f"[data] image_size = {stream.image_size} but [model] image_size = {options['image_size']}; "
                          "the images are cropped to the model's size: make them equal")
    return stream


def classifier_parts(config: dict[str, Any]) -> tuple[Any, Any, dict[str, Any] | None]:
    """(ClassifierConfig, ClassifierTrainConfig, diffusion options or None = the shipped digits model's) of a
    ``kind = "classifier"`` config (chapter 5's noisy classifier and its clean control, on the digits)."""
    from glide_edu.nn.classifier import ClassifierConfig
    from glide_edu.train_classifier import ClassifierTrainConfig

    model = _dataclass(ClassifierConfig, config.get("model", {}), "model")
    train = _dataclass(ClassifierTrainConfig, config.get("train", {}), "train")
    unknown = sorted(set(config.get("data", {})) - {"source"})
    if unknown:
        raise ConfigError(f"[data] has unknown key(s) {', '.join(unknown)}; a classifier trains on source = 'digits'")
    if (model.in_channels, model.num_classes) != (1, 10):
        raise ConfigError(f"[model] in_channels = {model.in_channels}, num_classes = {model.num_classes}: the digits "
                          "are grey (in_channels = 1) with 10 classes")
    try:
        model.validate()
        train.validate()
    except ValueError as err:
        raise ConfigError(f"[model]/[train]: {err}") from None
    diffusion = config.get("diffusion") or None
    if diffusion is not None:
        unknown = sorted(set(diffusion) - {"steps", "noise_schedule", "model_var_type"})
        if unknown:
            raise ConfigError(f"[diffusion] has unknown key(s) {', '.join(unknown)}; known: steps, noise_schedule, "
                              "model_var_type (or leave [diffusion] out: the shipped digits model's)")
    return model, train, diffusion
