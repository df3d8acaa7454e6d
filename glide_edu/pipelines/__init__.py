"""GLIDE's three reference pipelines: text-to-image, inpainting and CLIP guidance.

    from glide_edu.pipelines import Text2ImPipeline
    pipe = Text2ImPipeline.from_pretrained(device="cuda")      # downloads base.pt + upsample.pt once
    out = pipe("an oil painting of a corgi", guidance_scale=3.0, seed=0)
    out.images[0].save("corgi.png")

A pipeline holds its components — :class:`GlideModel` s (a network with the diffusion it was trained with,
from :func:`load_glide_model`), the tokenizer, for CLIP guidance the noised CLIP — and its ``__call__`` runs
the stages of :mod:`glide_edu.pipelines.stages` in order: encode the prompt → sample the base model →
quantise to 8 bits → upsample. Every pipeline also takes user-supplied models (e.g.
:func:`glide_edu.pipelines.tiny.tiny_glide_model`).
"""

from glide_edu.data import quantize_8bit
from glide_edu.pipelines.clip_guided import ClipGuidedPipeline
from glide_edu.pipelines.common import PipelineOutput
from glide_edu.pipelines.inpaint import InpaintPipeline
from glide_edu.pipelines.loading import load_glide_model, load_noised_clip
from glide_edu.pipelines.models import GlideModel
from glide_edu.pipelines.text2im import Text2ImPipeline
from glide_edu.plotting import to_pil

__all__ = [
    "ClipGuidedPipeline",
    "GlideModel",
    "InpaintPipeline",
    "PipelineOutput",
    "Text2ImPipeline",
    "load_glide_model",
    "load_noised_clip",
    "quantize_8bit",
    "to_pil",
]
