"""``glide-edu``: run OpenAI's released GLIDE (filtered) from the command line.

glide-edu sample "an oil painting of a corgi" --guidance-scale 3 --out corgi.png
glide-edu inpaint "a corgi in a field" --image grass.png --mask mask.png --out edit.png
glide-edu clip-guided "an oil painting of a corgi" --out clip.png
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

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
  plus GPT-2's tokenizer vocabulary (about 1.5 MB, into the cache's vocab folder). Already have the
  files? Put them in one folder and pass --checkpoint-dir FOLDER (no download). --cache-dir FOLDER
  caches in FOLDER instead: the checkpoints in it, the vocabulary in FOLDER/vocab.

speed:
  On a GPU a picture takes well under a minute. On a laptop CPU expect roughly 20-40 minutes per
  picture (try --steps 25 --upsample-steps 10 for a quick look; --no-upsample stops at 64x64).

examples:
  glide-edu sample --model mini "a red apple" --batch-size 4   (the book's miniature: offline, seconds)
  glide-edu sample "an oil painting of a corgi" --guidance-scale 3 --out corgi.png
  glide-edu sample "a red cube on a blue sphere" --batch-size 4 --seed 0 --device cuda --fp16
  glide-edu inpaint "a corgi in a field" --image grass.png --mask mask.png --out corgi_field.png
  glide-edu clip-guided "an oil painting of a corgi" --steps 50 --out clip_corgi.png"""

# The image files --out may name (suffix → Pillow format), where this Pillow can write them.
OUT_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".gif": "GIF",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}
# The registry entries each mode loads: (base model, upsampler); clip-guided adds the noised CLIP.
MODE_CHECKPOINTS = {
    "sample": ("base", "upsample"),
    "inpaint": ("base-inpaint", "upsample-inpaint"),
    "clip-guided": ("base", "upsample"),
}


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors as one line on stderr (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        usage_error(self.prog, message)


def usage_error(prog: str, message: str) -> NoReturn:
    """Print ``prog: error: message`` as one line to stderr and exit with status 2 (a usage error)."""
    text = textwrap.shorten(" ".join(message.split()), 400)
    print(f"{prog}: error: {text} (see {prog} --help)", file=sys.stderr)
    raise SystemExit(2)


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
    if value == float("inf"):
        raise argparse.ArgumentTypeError("expected a finite number, got infinity")
    return value


def _positive(text: str) -> float:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected a number > 0, got 0")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"expected a seed in 0…{2**63 - 1} (0 to 2**63 − 1), got {value}")
    return value


def _device(text: str) -> Any:
    """A device this machine has: cpu, cuda[:i] (i < the number of GPUs) or mps."""
    from glide_edu.pipelines.common import resolve_device

    try:
        return resolve_device(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _steps(text: str) -> str:
    """A step count ("25") or a GLIDE respacing string ("fast27", "ddim50", "10,10,5")."""
    from glide_edu.respace import space_timesteps

    try:
        space_timesteps(1000, text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def image_formats() -> dict[str, str]:
    """File suffix → Pillow format for the image files ``--out`` may name (those this Pillow can write)."""
    from PIL import Image

    Image.init()
    return {suffix: fmt for suffix, fmt in OUT_FORMATS.items() if fmt in Image.SAVE}


def _out_path(text: str) -> Path:
    """An image file to write: a known image suffix, in an existing folder this user may write to."""
    path = Path(text).expanduser()
    formats = image_formats()
    if path.suffix.lower() not in formats:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an image file name; end it in one of {', '.join(sorted(formats))}"
        )
    folder = path.parent
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"the folder {str(folder)!r} of {text!r} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write into the folder {str(folder)!r}; choose another --out")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; give a file name such as {text.rstrip('/')}/out.png")
    return path


def _common(parser: argparse.ArgumentParser, guidance: float, guidance_help: str, out: str) -> None:
    parser.add_argument("prompt", help='what the picture should show, e.g. "an oil painting of a corgi"')
    parser.add_argument(
        "--out",
        type=_out_path,
        default=out,
        help=f"image file to write, .png/.jpg/.webp/… (default: {out}); a batch is tiled side by side",
    )
    parser.add_argument("--guidance-scale", type=_non_negative, default=guidance, help=guidance_help)
    parser.add_argument("--batch-size", type=_positive_int, default=1, help="how many pictures (default: 1)")
    parser.add_argument(
        "--seed", type=_seed, default=None, help="random seed (0 to 2**63 - 1), for the same pictures again"
    )
    parser.add_argument(
        "--steps", type=_steps, default="100", help="base-model steps: a number or a GLIDE respacing (default: 100)"
    )
    parser.add_argument("--upsample-steps", type=_steps, default="fast27", help="upsampler steps (default: fast27)")
    parser.add_argument(
        "--upsample-temperature",
        type=_positive,
        default=0.997,
        help="scale of the upsampler's starting noise (default: 0.997; 1.0 is sharper but can be grainy)",
    )
    parser.add_argument("--no-upsample", action="store_true", help="stop at the 64x64 base picture")
    parser.add_argument("--device", type=_device, default=None,
                        help="cpu, cuda, cuda:N or mps (default: cuda if available, else mps, else cpu)")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="half precision as the reference does it (GPU)")
    precision.add_argument("--bf16", action="store_true", help="bfloat16 autocast (recent GPUs and CPUs)")
    precision.add_argument("--precision", choices=("fp32", "fp16", "bf16"), help="= --fp16 / --bf16 (fp32: neither)")
    parser.add_argument("--checkpoint-dir", type=Path, default=None, help="folder holding the official .pt files")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="download cache: the checkpoints, and GPT-2's vocabulary in its vocab folder",
    )
    parser.add_argument("--vocab-dir", type=Path, default=None, help="folder holding GPT-2's encoder.json/vocab.bpe")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = _Parser(prog="glide-edu", description=DESCRIPTION, epilog=EPILOG, formatter_class=formatter)
    modes = parser.add_subparsers(dest="mode", metavar="MODE", required=True)
    cfg_help = "classifier-free guidance s: 1 = none, higher = closer to the text, less varied (default: %(default)s)"
    sample = modes.add_parser(
        "sample", help="text -> image", description=DESCRIPTION, epilog=EPILOG, formatter_class=formatter
    )
    _common(sample, 3.0, cfg_help, "sample.png")
    sample.add_argument("--model", choices=["official", "mini"], default="official",
                        help="official: the released GLIDE (filtered); mini: the book's 32x32 miniature, shipped "
                             "with glide-edu (offline, seconds on a CPU; emoji and shapes)")
    sample.add_argument("--model-file", type=Path, default=None,
                        help="with --model mini: another GLIDE file in the small format (default: the shipped one)")
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
    from glide_edu.train_run import add_parser

    add_parser(modes, formatter)
    return parser


def check_memory(args: argparse.Namespace, registry: Mapping[str, Any]) -> None:
    """Refuse (usage error) a run whose estimated peak memory exceeds what the device has free."""
    from glide_edu.pipelines import memory

    base, upsampler = MODE_CHECKPOINTS[args.mode]
    upsampler = None if args.no_upsample else upsampler
    clip = args.mode == "clip-guided"
    cfg = not clip and args.guidance_scale != 1.0
    free = memory.available_memory(args.device)
    if free is None:
        return  # unknown: nothing to compare with
    weights = memory.models_weight_bytes(registry, [base, upsampler], clip=clip, fp16=args.fp16)

    def estimate(batch: int) -> memory.MemoryEstimate:
        return memory.estimate_peak_memory(
            registry, base, upsampler, batch, cfg=cfg, clip=clip, fp16=args.fp16, bf16=args.bf16,
            device_type=args.device.type, weights=weights,
        )  # fmt: skip

    need = estimate(args.batch_size)
    if need.total <= free:
        return
    fits = memory.largest_batch(lambda b: estimate(b).total <= free, args.batch_size - 1)
    advice = f"use --batch-size {fits} or less" if fits else "free memory or use a bigger machine (on a GPU: --fp16)"
    usage_error(
        f"glide-edu {args.mode}",
        f"--batch-size {args.batch_size} needs {need.describe()} but only {free / memory.GIB:.1f} GiB is free on "
        f"{args.device}; {advice}",
    )


def _grid(images: Sequence[Any]) -> Any:
    from PIL import Image

    width, height = images[0].size
    grid = Image.new("RGB", (width * len(images), height))
    for i, image in enumerate(images):
        grid.paste(image, (i * width, 0))
    return grid


def _read_inputs(args: argparse.Namespace) -> tuple[Any, Any]:
    """The inpainting source (RGB) and its mask (L, 0 or 255), read safely (see :func:`glide_edu.data.read_image`)."""
    from glide_edu.data import read_image

    for path in (args.image, args.mask):
        if not path.is_file():
            raise ValueError(f"{path} does not exist; give the path of a PNG or JPEG file")
    image = read_image(args.image, "RGB")
    mask = read_image(args.mask, "L").point(lambda v: 255 if v >= 128 else 0)
    return image, mask


def run(args: argparse.Namespace, registry: Mapping[str, Any] | None = None, tokenizer: Any = None) -> Path:
    """Build the pipeline for ``args.mode``, run it and write the image atomically; returns its path."""
    from glide_edu.pipelines import ClipGuidedPipeline, InpaintPipeline, Text2ImPipeline
    from glide_edu.pipelines.loading import default_tokenizer

    progress = not args.quiet
    if getattr(args, "model", "official") == "mini":
        return _run_mini(args, progress)
    inputs = _read_inputs(args) if args.mode == "inpaint" else ()
    if tokenizer is None:
        tokenizer = default_tokenizer(args.vocab_dir, cache_dir=args.cache_dir, progress=progress)
    load = {
        "device": args.device,
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
    pipeline = {"sample": Text2ImPipeline, "inpaint": InpaintPipeline, "clip-guided": ClipGuidedPipeline}[args.mode]
    out = pipeline.from_pretrained(**load)(args.prompt, *inputs, **options)
    return _write_grid(out.images, args.out)


def _run_mini(args: argparse.Namespace, progress: bool) -> Path:
    """``sample --model mini``: the shipped miniature through the same Text2ImPipeline (no upsampler)."""
    from glide_edu.pipelines.mini import mini_text2im

    if args.fp16:
        raise ValueError("--fp16 is for the released models on a GPU; the miniature runs in float32 (or --bf16)")
    pipeline = mini_text2im(args.model_file, args.device)
    out = pipeline(args.prompt, batch_size=args.batch_size, guidance_scale=args.guidance_scale,
                   respacing=args.steps, seed=args.seed, bf16=args.bf16, progress=progress, upsample=False)
    return _write_grid(out.images, args.out)


def _write_grid(images: Sequence[Any], path: Path) -> Path:
    """The images side by side, written atomically in the format ``path``'s suffix names."""
    from glide_edu.fileio import atomic_write

    grid = _grid(images)
    fmt = image_formats()[path.suffix.lower()]
    return atomic_write(path, lambda tmp: grid.save(tmp, format=fmt))


def main(argv: Sequence[str] | None = None, *, registry: Mapping[str, Any] | None = None, tokenizer: Any = None) -> int:
    """Entry point of ``glide-edu``. ``registry`` / ``tokenizer`` replace the official ones (tests, tiny models).

    Returns 0, or 1 after a one-line error; bad arguments exit with status 2 (one line, before any work).
    """
    from glide_edu.hub import CHECKPOINTS, CheckpointError
    from glide_edu.pipelines.common import resolve_device
    from glide_edu.vocab import VocabError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.mode == "train":
        from glide_edu.train_run import main_cli

        return main_cli(args)
    if getattr(args, "precision", None):  # one spelling for the code below
        args.fp16, args.bf16 = args.precision == "fp16", args.precision == "bf16"
    if args.device is None:
        args.device = resolve_device(None)
    if getattr(args, "model", "official") == "official":
        check_memory(args, CHECKPOINTS if registry is None else registry)
    elif args.model_file is not None and not args.model_file.is_file():
        usage_error(f"glide-edu {args.mode}", f"--model-file {args.model_file} does not exist; give a .safetensors "
                    "GLIDE file written by python -m glide_edu.recipes glide-mini, or leave it out")
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
