"""GLIDE's three reference pipelines: text-to-image, inpainting and CLIP guidance.

    from glide_edu.pipelines import Text2ImPipeline
    pipe = Text2ImPipeline.from_pretrained(device="cuda")      # downloads base.pt + upsample.pt once
    out = pipe("an oil painting of a corgi", guidance_scale=3.0, seed=0)
    out.images[0].save("corgi.png")

Every pipeline also takes user-supplied models (e.g. :func:`glide_edu.pipelines.tiny.tiny_glide_model`).
"""

from glide_edu.pipelines.clip_guided import ClipGuidedPipeline
from glide_edu.pipelines.common import PipelineOutput, attach_schedule, quantize_8bit, to_pil
from glide_edu.pipelines.inpaint import InpaintPipeline
from glide_edu.pipelines.text2im import Text2ImPipeline

__all__ = [
    "ClipGuidedPipeline",
    "InpaintPipeline",
    "PipelineOutput",
    "Text2ImPipeline",
    "attach_schedule",
    "quantize_8bit",
    "to_pil",
]
