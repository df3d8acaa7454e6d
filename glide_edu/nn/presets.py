"""Build GLIDE's networks from the reference's option dictionaries (``model_and_diffusion_defaults``)."""

from __future__ import annotations

from typing import Any

from glide_edu.nn.text import (
    InpaintText2ImUNet,
    SuperResInpaintText2ImUnet,
    SuperResText2ImUNet,
    Text2ImUNet,
    TextConfig,
)
from glide_edu.nn.unet import UNetConfig

GLIDE_KINDS = {
    # kind: (class, in_channels)
    "base": (Text2ImUNet, 3),
    "upsample": (SuperResText2ImUNet, 6),
    "base-inpaint": (InpaintText2ImUNet, 7),
    "upsample-inpaint": (SuperResInpaintText2ImUnet, 10),
}


def _ints(value: Any) -> tuple[int, ...]:
    if isinstance(value, str):
        return tuple(int(v) for v in value.split(",") if v.strip())
    return tuple(int(v) for v in value)


def glide_configs(options: dict[str, Any]) -> tuple[UNetConfig, TextConfig]:
    """(UNetConfig, TextConfig) from GLIDE option names (num_channels, channel_mult "1,2,3,4", …)."""
    inpaint, super_res = bool(options.get("inpaint")), bool(options.get("super_res"))
    in_channels = 3 * (2 if super_res else 1) + (4 if inpaint else 0)
    unet = UNetConfig(
        image_size=int(options["image_size"]),
        in_channels=in_channels,
        model_channels=int(options["num_channels"]),
        out_channels=6,
        num_res_blocks=int(options["num_res_blocks"]),
        attention_resolutions=_ints(options["attention_resolutions"]),
        channel_mult=_ints(options.get("channel_mult") or ()) or None,
        dropout=float(options.get("dropout", 0.0)),
        num_heads=int(options.get("num_heads", 1)),
        num_head_channels=int(options.get("num_head_channels", -1)),
        num_heads_upsample=int(options.get("num_heads_upsample", -1)),
        use_scale_shift_norm=bool(options.get("use_scale_shift_norm", True)),
        resblock_updown=bool(options.get("resblock_updown", True)),
    )
    text = TextConfig(
        text_ctx=int(options["text_ctx"]),
        xf_width=int(options["xf_width"]),
        xf_layers=int(options["xf_layers"]),
        xf_heads=int(options["xf_heads"]),
        xf_final_ln=bool(options.get("xf_final_ln", True)),
        xf_padding=bool(options.get("xf_padding", True)),
        n_vocab=int(options.get("n_vocab", 50257)),  # GPT-2's; the book's miniature uses 257 (bytes)
    )
    return unet, text


def create_glide_model(options: dict[str, Any]) -> Text2ImUNet:
    """The text-conditional UNet (base / upsample / inpaint / upsample-inpaint) described by ``options``."""
    kind = {
        (False, False): "base",
        (True, False): "upsample",
        (False, True): "base-inpaint",
        (True, True): "upsample-inpaint",
    }[(bool(options.get("super_res")), bool(options.get("inpaint")))]
    cls = GLIDE_KINDS[kind][0]
    unet, text = glide_configs(options)
    return cls(unet, text)
