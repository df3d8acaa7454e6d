"""``glide-edu``: run OpenAI's released GLIDE (filtered) from the command line.

glide-edu sample "an oil painting of a corgi" --guidance-scale 3 --out corgi.png
glide-edu inpaint "a corgi in a field" --image grass.png --mask mask.png --out edit.png
glide-edu clip-guided "an oil painting of a corgi" --out clip.png
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Make pictures with OpenAI's released GLIDE (filtered), run by glide_edu's own code exactly as the
reference notebooks run it: a 64x64 text-conditional diffusion model, then a 64->256 upsampler.

modes:
  sample        text -> image: classifier-free guidance (--guidance-scale, default 3), 100 base steps,
                then 27 upsampler steps
  inpaint       repaint the parts of --image that --mask marks black (default guidance 5)
  clip-guided   text -> image steered by the noised CLIP instead (--guidance-scale is CLIP's, default 3)

Run `glide-edu MODE --help` for the options of a mode."""

EPILOG = """\
checkpoints:
  On first use the official checkpoints are downloaded once into the cache folder
  ($GLIDE_EDU_CACHE, else $XDG_CACHE_HOME/glide_edu, else ~/.cache/glide_edu) and verified:
    sample:       base.pt + upsample.pt                   (about 1.5 GB + 1.6 GB)
    inpaint:      base_inpaint.pt + upsample_inpaint.pt   (about 1.5 GB + 1.6 GB)
    clip-guided:  base.pt + upsample.pt + clip_image_enc.pt + clip_text_enc.pt (+ about 0.35 + 0.3 GB)
  plus GPT-2's tokenizer vocabulary (about 1.5 MB). Already have the files? Put them in one folder
  and pass --checkpoint-dir FOLDER (no download). Use --cache-dir to cache somewhere else.

speed:
  On a GPU a picture takes well under a minute. On a laptop CPU expect roughly 20-40 minutes per
  picture (try --steps 25 --upsample-steps 10 for a quick look; --no-upsample stops at 64x64).

examples:
  glide-edu sample "an oil painting of a corgi" --guidance-scale 3 --out corgi.png
  glide-edu sample "a red cube on a blue sphere" --batch-size 4 --seed 0 --device cuda --fp16
  glide-edu inpaint "a corgi in a field" --image grass.png --mask mask.png --out corgi_field.png
  glide-edu clip-guided "an oil painting of a corgi" --steps 50 --out clip_corgi.png"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def _steps(text: str) -> str:
    """A step count ("25") or a GLIDE respacing string ("fast27", "ddim50", "10,10,5")."""
    from glide_edu.respace import space_timesteps

    try:
        space_timesteps(1000, text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _common(parser: argparse.ArgumentParser, guidance: float, guidance_help: str, out: str) -> None:
    parser.add_argument("prompt", help='what the picture should show, e.g. "an oil painting of a corgi"')
    parser.add_argument("--out", default=out, help=f"PNG file to write (default: {out}); a batch is tiled side by side")
    parser.add_argument("--guidance-scale", type=_non_negative, default=guidance, help=guidance_help)
    parser.add_argument("--batch-size", type=_positive_int, default=1, help="how many pictures (default: 1)")
    parser.add_argument("--seed", type=int, default=None, help="random seed, for the same pictures again")
    parser.add_argument(
        "--steps", type=_steps, default="100", help="base-model steps: a number or a GLIDE respacing (default: 100)"
    )
    parser.add_argument("--upsample-steps", type=_steps, default="fast27", help="upsampler steps (default: fast27)")
    parser.add_argument(
        "--upsample-temperature",
        type=_non_negative,
        default=0.997,
        help="scale of the upsampler's starting noise (default: 0.997; 1.0 is sharper but can be grainy)",
    )
    parser.add_argument("--no-upsample", action="store_true", help="stop at the 64x64 base picture")
    parser.add_argument(
        "--device", default=None, help="cpu, cuda or mps (default: cuda if available, else mps, else cpu)"
    )
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="half precision as the reference does it (GPU)")
    precision.add_argument("--bf16", action="store_true", help="bfloat16 autocast (recent GPUs and CPUs)")
    parser.add_argument("--checkpoint-dir", type=Path, default=None, help="folder holding the official .pt files")
    parser.add_argument("--cache-dir", type=Path, default=None, help="download cache (default: see below)")
    parser.add_argument("--vocab-dir", type=Path, default=None, help="folder holding GPT-2's encoder.json/vocab.bpe")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="glide-edu", description=DESCRIPTION, epilog=EPILOG, formatter_class=formatter
    )
    modes = parser.add_subparsers(dest="mode", metavar="MODE", required=True)
    cfg_help = "classifier-free guidance s: 1 = none, higher = closer to the text, less varied (default: %(default)s)"
    sample = modes.add_parser(
        "sample", help="text -> image", description=DESCRIPTION, epilog=EPILOG, formatter_class=formatter
    )
    _common(sample, 3.0, cfg_help, "sample.png")
    inpaint = modes.add_parser(
        "inpaint", help="repaint part of an image", description=DESCRIPTION, epilog=EPILOG, formatter_class=formatter
    )
    _common(inpaint, 5.0, cfg_help, "inpaint.png")
    inpaint.add_argument("--image", type=Path, required=True, help="the picture to edit (any size; resized)")
    inpaint.add_argument(
        "--mask",
        type=Path,
        required=True,
        help="black-and-white picture, white = keep, black = repaint; same size as --image, or 64x64",
    )
    clip = modes.add_parser(
        "clip-guided",
        help="text -> image with CLIP guidance",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=formatter,
    )
    _common(clip, 3.0, "CLIP gradient scale: 0 = no guidance (default: %(default)s)", "clip_guided.png")
    return parser


def _grid(images: Sequence[Any]) -> Any:
    from PIL import Image

    width, height = images[0].size
    grid = Image.new("RGB", (width * len(images), height))
    for i, image in enumerate(images):
        grid.paste(image, (i * width, 0))
    return grid


def run(args: argparse.Namespace, registry: Mapping[str, Any] | None = None, tokenizer: Any = None) -> Path:
    """Build the pipeline for ``args.mode``, run it and write the PNG; returns its path."""
    from PIL import Image

    from glide_edu.pipelines import ClipGuidedPipeline, InpaintPipeline, Text2ImPipeline
    from glide_edu.pipelines.common import resolve_device
    from glide_edu.pipelines.loading import default_tokenizer

    device = resolve_device(args.device)  # fail before any download
    progress = not args.quiet
    if tokenizer is None:
        tokenizer = default_tokenizer(args.vocab_dir, progress=progress)
    load = {
        "device": device,
        "fp16": args.fp16,
        "cache_dir": args.cache_dir,
        "checkpoint_dir": args.checkpoint_dir,
        "upsample": not args.no_upsample,
        "registry": registry,
        "tokenizer": tokenizer,
        "progress": progress,
    }
    options = {
        "batch_size": args.batch_size,
        "guidance_scale": args.guidance_scale,
        "respacing": args.steps,
        "upsample_respacing": args.upsample_steps,
        "upsample_temperature": args.upsample_temperature,
        "seed": args.seed,
        "bf16": args.bf16,
        "progress": progress,
        "upsample": not args.no_upsample,
    }
    if args.mode == "inpaint":
        for path in (args.image, args.mask):
            if not path.is_file():
                raise ValueError(f"{path} does not exist; give the path of a PNG or JPEG file")
        image = Image.open(args.image).convert("RGB")
        mask = (Image.open(args.mask).convert("L").point(lambda v: 255 if v >= 128 else 0)).convert("L")
        out = InpaintPipeline.from_pretrained(**load)(args.prompt, image, mask, **options)
    elif args.mode == "clip-guided":
        out = ClipGuidedPipeline.from_pretrained(**load)(args.prompt, **options)
    else:
        out = Text2ImPipeline.from_pretrained(**load)(args.prompt, **options)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    _grid(out.images).save(args.out)
    return args.out


def main(argv: Sequence[str] | None = None, *, registry: Mapping[str, Any] | None = None, tokenizer: Any = None) -> int:
    """Entry point of ``glide-edu``. ``registry`` / ``tokenizer`` replace the official ones (tests, tiny models)."""
    from glide_edu.hub import CheckpointError
    from glide_edu.vocab import VocabError

    parser = build_parser()
    args = parser.parse_args(argv)
    args.out = Path(args.out)
    try:
        path = run(args, registry, tokenizer)
    except (ValueError, CheckpointError, VocabError, OSError) as err:
        message = " ".join(str(err).split())
        print(f"glide-edu {args.mode}: error: {textwrap.shorten(message, 400)}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
