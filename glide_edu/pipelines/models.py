"""A GLIDE network together with the diffusion it was trained with — what the loader returns.

A released checkpoint is only half of a model: the state dict holds the network's weights, while the
noise schedule it was trained with (cosine for the 64×64 models, linear for the upsamplers) comes from the
reference's options. :class:`GlideModel` keeps the two side by side, with the model's ``kind``:

    model = load_glide_model("upsample")          # GlideModel(network=SuperResText2ImUNet(...), ...)
    diffusion = model.diffusion("fast27")         # the respaced learned-range ε diffusion it samples with
    eps_and_v = model.network(x_t, t, ...)        # the nn.Module itself

Nothing is stored on the network, and nothing is guessed from its class.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from glide_edu.nn.presets import GLIDE_KINDS
from glide_edu.prior import X0_PRIOR_ABOVE_T, check_prior, x0_prior
from glide_edu.respace import DiffusionConfig, SpacedDiffusion

__all__ = ["GlideModel"]


@dataclass(frozen=True)
class GlideModel:
    """A GLIDE UNet (``network``), the options of its diffusion and its kind.

    ``diffusion_config``: the :class:`~glide_edu.respace.DiffusionConfig` it was trained with (a dict of its
    fields is converted), e.g. ``DiffusionConfig(1000, "linear")``: GLIDE predicts ε with a learned-range Σ.
    ``kind``: "base", "upsample", "base-inpaint" or "upsample-inpaint"; it must agree with the network's
    input channels (3, 6, 7, 10: x_t, plus the low-res image, plus the masked image and the mask).
    ``x0_prior_mean``: the training data's mean per channel, for models trained on pictures whose mean is far
    from 0 (the book's miniatures, on white): above ``x0_prior_above_t`` the sampler's x̂₀ is that mean
    (:mod:`glide_edu.prior`); None (the released models) changes nothing.
    """

    network: nn.Module
    diffusion_config: DiffusionConfig
    kind: str
    x0_prior_mean: tuple[float, ...] | None = None
    x0_prior_above_t: int = X0_PRIOR_ABOVE_T

    def __post_init__(self) -> None:
        if self.kind not in GLIDE_KINDS:
            raise ValueError(f"unknown GLIDE kind {self.kind!r}; use one of {', '.join(GLIDE_KINDS)}")
        config = getattr(self.network, "config", None)
        if not isinstance(self.network, nn.Module) or not hasattr(config, "in_channels"):
            raise ValueError(
                "network must be a GLIDE UNet (glide_edu.nn.presets.create_glide_model), "
                f"got {type(self.network).__name__}"
            )
        expected = GLIDE_KINDS[self.kind][1]
        if config.in_channels != expected:
            raise ValueError(
                f"a {self.kind!r} model takes {expected} input channels but this network takes {config.in_channels}; "
                "give the kind the network was built as"
            )
        if isinstance(self.diffusion_config, Mapping):
            object.__setattr__(self, "diffusion_config", DiffusionConfig.from_dict(self.diffusion_config))
        if not isinstance(self.diffusion_config, DiffusionConfig):
            raise ValueError(
                "diffusion_config must be a DiffusionConfig (or a dict of its fields), "
                f"got {type(self.diffusion_config).__name__}"
            )
        if self.x0_prior_mean is not None:
            mean, above = check_prior(self.x0_prior_mean, self.x0_prior_above_t, self.diffusion_config.steps)
            object.__setattr__(self, "x0_prior_mean", mean)
            object.__setattr__(self, "x0_prior_above_t", above)

    @classmethod
    def from_options(cls, network: nn.Module, options: Mapping[str, Any], kind: str) -> GlideModel:
        """From GLIDE's option dictionary (``noise_schedule``, ``diffusion_steps``; the book's
        ``x0_prior_mean`` and ``x0_prior_above_t`` when present), as checkpoints are registered."""
        if "noise_schedule" not in options:
            raise ValueError("the model options lack 'noise_schedule'; the model's diffusion cannot be built")
        config = DiffusionConfig(int(options.get("diffusion_steps", 1000)), str(options["noise_schedule"]))
        prior = options.get("x0_prior_mean")
        return cls(network, config, kind, None if prior is None else tuple(prior),
                   options.get("x0_prior_above_t", X0_PRIOR_ABOVE_T))

    def with_prior(self, model_fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        """``model_fn`` (the network, given original timesteps) with the data-mean prior above
        ``x0_prior_above_t`` when the model has one (:func:`glide_edu.prior.x0_prior`), else unchanged."""
        if self.x0_prior_mean is None:
            return model_fn
        return x0_prior(model_fn, self.diffusion("").alphas_cumprod, self.x0_prior_mean, self.x0_prior_above_t)

    def diffusion(self, respacing: str | int | Iterable[int] = "") -> SpacedDiffusion:
        """The model's diffusion, respaced (``"100"``, ``"fast27"``, ``"ddim50"``, …; ``""`` = every step)."""
        try:
            return self.diffusion_config.create(respacing)
        except ValueError as err:
            raise ValueError(f"bad respacing {respacing!r} for this model: {err}") from None

    @property
    def image_size(self) -> int:
        """The side of the images the network makes."""
        return int(self.network.config.image_size)

    @property
    def text_ctx(self) -> int:
        """How many caption tokens the network reads."""
        return int(self.network.text_config.text_ctx)
