"""Full-size GLIDE (filtered) on the CPU: forward-pass times, the attention path, the pipeline's peak memory.

The released checkpoints are not needed: the models are built from the official presets
(:data:`glide_edu.hub.CHECKPOINTS` ``"base"``, 385,030,726 parameters, and ``"upsample"``, 398,361,286) with
random weights. Speed and memory depend on the shapes only, not on the values of the weights. The layers that
GLIDE initialises to zero (attention ``proj_out``, the last conv of each ResBlock and of the output) get
N(0, 0.02²) values, so that the attention path changes the output and the two paths can be compared.

What it measures, fp32, ``torch.set_num_threads(--threads)``:

1. ``base`` forward at batch 2 (64×64, timestep, 128 caption tokens + mask, as the pipeline calls it with
   classifier-free guidance: the prompt and the empty prompt), median of ``--repeats`` after one warm-up.
   ``upsample`` forward at batch 2 (x_t 256×256, 64×64 low-res input, tokens + mask), median of
   ``--up-repeats`` after one warm-up.
2. glide_edu's attention (``glide_edu.nn.unet.qkv_attention``, ``F.scaled_dot_product_attention``) against a
   naive ``softmax(q kᵀ) v`` written here (the same c^(-1/4) scaling of q and k, softmax in float32), put in
   place by swapping the module attribute. The maximum absolute difference of the two is printed first: per
   attention call and on the whole forward output. Then both are timed in alternation: the full ``base``
   forward, and the attention calls of one ``base`` forward alone (their inputs captured once, then replayed).
   The text transformer's own attention (128 tokens) keeps SDPA in both runs.
3. Peak memory of the full text-to-image pipeline, batch 1: base with CFG (a doubled batch of 2) and the
   8-bit hand-over to the upsampler, each in a fresh subprocess, for each of ``--steps`` (the base's respaced
   step count and the upsampler's DDIM step count). Reported: ``ru_maxrss`` of the subprocess (whole life,
   model construction included), the resident size once both models are built, and the peak while sampling
   (Linux: ``VmHWM`` after resetting it through ``/proc/self/clear_refs``). Peak memory does not grow with
   the number of steps, because each step frees the previous step's activations; the two step counts check
   that, and the peak so far is also recorded after every network call (on the run recorded in
   docs/benchmarks.md it levels off once the upsampler has run twice: its second call adds about 70 MiB,
   most likely the allocator's free lists, later calls nothing). Prompts go through GPT-2's byte-level scheme
   without merges (``byte_level_tokenizer``, no vocabulary files needed); the model sees 128 token ids either
   way, so the cost is the same as with the real tokenizer.

    nice -n 5 python benchmarks/glide_cpu.py --threads 2 --repeats 5 --up-repeats 2 --steps 1 3

``--json FILE`` writes all numbers; ``--skip base upsample`` runs only the memory part. Expect about 15 minutes
on 2 cores (one upsampler forward at batch 2 takes about a minute) and about 4 GiB of memory.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from glide_edu.hub import CHECKPOINTS
from glide_edu.nn import unet as unet_mod
from glide_edu.pipelines import GlideModel, Text2ImPipeline
from glide_edu.tokenizers import byte_level_tokenizer

PROMPT = "an oil painting of a corgi"
SDPA_ATTENTION = unet_mod.qkv_attention


# ------------------------------------------------------------------------------------------------ models
def build(name: str, seed: int = 0) -> nn.Module:
    """The official preset ``name`` with random weights (zero-initialised tensors filled with N(0, 0.02²))."""
    entry = CHECKPOINTS[name]
    torch.manual_seed(seed)
    model = entry.build()
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0.0, 0.02)
    n = sum(p.numel() for p in model.parameters())
    if n != entry.num_parameters:
        raise SystemExit(f"{name}: {n:,} parameters, the official preset has {entry.num_parameters:,}")
    return model.eval()


def build_glide(name: str, seed: int = 0) -> GlideModel:
    """:func:`build` with its diffusion schedule, as the pipelines take it."""
    return GlideModel.from_options(build(name, seed), CHECKPOINTS[name].options, CHECKPOINTS[name].kind)


def model_inputs(model: nn.Module, batch: int, seed: int = 1) -> dict[str, Tensor]:
    """Inputs shaped as the pipeline passes them: x_t, t, tokens + mask (CFG rows: prompt, then "")."""
    gen = torch.Generator().manual_seed(seed)
    size = model.config.image_size
    prompts = [PROMPT if i < (batch + 1) // 2 else "" for i in range(batch)]
    tokens, mask = byte_level_tokenizer().tokens_and_mask(prompts, model.text_config.text_ctx)
    kw = {
        "x": torch.randn(batch, 3, size, size, generator=gen),
        "timesteps": torch.randint(0, 1000, (batch,), generator=gen),
        "tokens": tokens,
        "mask": mask,
    }
    if model.config.in_channels == 6:  # the upsampler also takes the 64×64 image
        kw["low_res"] = torch.rand(batch, 3, 64, 64, generator=gen) * 2 - 1
    return kw


# --------------------------------------------------------------------------------------------- attention
def naive_attention(qkv: Tensor, num_heads: int, encoder_kv: Tensor | None = None) -> Tensor:
    """softmax(q kᵀ) v, written out: same layout and scaling as ``qkv_attention``, softmax in float32."""
    bs, length, width = qkv.shape
    ch = width // (3 * num_heads)
    heads = qkv.reshape(bs, length, num_heads, 3 * ch).permute(0, 2, 1, 3)  # (B, H, T, 3c)
    q, k, v = heads[..., :ch], heads[..., ch : 2 * ch], heads[..., 2 * ch :]
    if encoder_kv is not None:
        enc = encoder_kv.reshape(bs, encoder_kv.shape[1], num_heads, 2 * ch).permute(0, 2, 1, 3)  # (B, H, L, 2c)
        k = torch.cat([enc[..., :ch], k], dim=2)
        v = torch.cat([enc[..., ch:], v], dim=2)
    scale = 1 / math.sqrt(math.sqrt(ch))
    weights = torch.matmul(q * scale, (k * scale).transpose(-1, -2))  # (B, H, T, S)
    weights = torch.softmax(weights.float(), dim=-1).to(v.dtype)
    out = torch.matmul(weights, v)  # (B, H, T, c)
    return out.permute(0, 2, 1, 3).reshape(bs, length, num_heads * ch)


def use_attention(fn: Callable[..., Tensor]) -> None:
    """Put ``fn`` in place of glide_edu's ``qkv_attention`` (AttentionBlock looks it up in its module)."""
    unet_mod.qkv_attention = fn


def capture_attention_inputs(model: nn.Module, kw: dict[str, Tensor]) -> list[tuple[Tensor, int, Tensor | None]]:
    """The (qkv, num_heads, encoder_kv) of every attention call in one forward pass."""
    calls: list[tuple[Tensor, int, Tensor | None]] = []

    def recording(qkv: Tensor, num_heads: int, encoder_kv: Tensor | None = None) -> Tensor:
        calls.append((qkv.clone(), num_heads, None if encoder_kv is None else encoder_kv.clone()))
        return SDPA_ATTENTION(qkv, num_heads, encoder_kv)

    use_attention(recording)
    try:
        with torch.inference_mode():
            model(**kw)
    finally:
        use_attention(SDPA_ATTENTION)
    return calls


# ------------------------------------------------------------------------------------------------ timing
def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def alternate(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Run each of ``fns`` in turn, ``warmup`` untimed rounds then ``repeats`` timed rounds (A B A B …)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(timed(fn))
    return times


def summary(times: list[float]) -> dict[str, Any]:
    return {"median_s": statistics.median(times), "min_s": min(times), "times_s": [round(t, 4) for t in times]}


def forward_fn(model: nn.Module, kw: dict[str, Tensor], attention: Callable[..., Tensor]) -> Callable[[], Tensor]:
    def run() -> Tensor:
        use_attention(attention)
        try:
            with torch.inference_mode():
                return model(**kw)
        finally:
            use_attention(SDPA_ATTENTION)

    return run


def attention_fn(
    calls: list[tuple[Tensor, int, Tensor | None]], attention: Callable[..., Tensor]
) -> Callable[[], None]:
    def run() -> None:
        with torch.inference_mode():
            for qkv, heads, enc in calls:
                attention(qkv, heads, enc)

    return run


def bench_base(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    model = build("base")
    print(f"base: built in {time.perf_counter() - t0:.1f} s, {CHECKPOINTS['base'].num_parameters:,} parameters")
    kw = model_inputs(model, args.batch)

    calls = capture_attention_inputs(model, kw)
    shapes = sorted({(tuple(q.shape), h, None if e is None else tuple(e.shape)) for q, h, e in calls})
    per_call = max((SDPA_ATTENTION(q, h, e) - naive_attention(q, h, e)).abs().max().item() for q, h, e in calls)
    with torch.inference_mode():
        out_sdpa = forward_fn(model, kw, SDPA_ATTENTION)()
        out_naive = forward_fn(model, kw, naive_attention)()
    full = (out_sdpa - out_naive).abs().max().item()
    print(f"attention: {len(calls)} calls per forward; shapes (qkv, heads, encoder_kv): {shapes}")
    print(
        f"max |SDPA - naive|: {per_call:.3g} per attention call, {full:.3g} on the forward output "
        f"(output max |x| {out_sdpa.abs().max().item():.3g})"
    )

    fwd = alternate(
        {"sdpa": forward_fn(model, kw, SDPA_ATTENTION), "naive": forward_fn(model, kw, naive_attention)},
        args.repeats,
    )
    att = alternate(
        {"sdpa": attention_fn(calls, SDPA_ATTENTION), "naive": attention_fn(calls, naive_attention)},
        args.attn_repeats,
    )
    res = {
        "parameters": CHECKPOINTS["base"].num_parameters,
        "batch": args.batch,
        "attention_calls": len(calls),
        "max_abs_diff_attention_call": per_call,
        "max_abs_diff_forward": full,
        "forward": {k: summary(v) for k, v in fwd.items()},
        "attention_only": {k: summary(v) for k, v in att.items()},
    }
    res["forward_ratio_naive_over_sdpa"] = res["forward"]["naive"]["median_s"] / res["forward"]["sdpa"]["median_s"]
    res["attention_ratio_naive_over_sdpa"] = (
        res["attention_only"]["naive"]["median_s"] / res["attention_only"]["sdpa"]["median_s"]
    )
    res["attention_share_of_forward"] = res["attention_only"]["sdpa"]["median_s"] / res["forward"]["sdpa"]["median_s"]
    f, a = res["forward"], res["attention_only"]
    print(
        f"base forward, batch {args.batch}: SDPA {f['sdpa']['median_s']:.3f} s, naive {f['naive']['median_s']:.3f} s "
        f"(naive/SDPA {res['forward_ratio_naive_over_sdpa']:.3f}; "
        f"times {f['sdpa']['times_s']} / {f['naive']['times_s']})"
    )
    print(
        f"attention calls alone: SDPA {a['sdpa']['median_s']:.3f} s, naive {a['naive']['median_s']:.3f} s "
        f"(naive/SDPA {res['attention_ratio_naive_over_sdpa']:.3f}); attention = "
        f"{100 * res['attention_share_of_forward']:.1f} % of the SDPA forward"
    )
    return res


def bench_upsampler(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    model = build("upsample")
    print(f"upsample: built in {time.perf_counter() - t0:.1f} s, {CHECKPOINTS['upsample'].num_parameters:,} parameters")
    kw = model_inputs(model, args.batch)
    times = alternate({"sdpa": forward_fn(model, kw, SDPA_ATTENTION)}, args.up_repeats)["sdpa"]
    res = {"parameters": CHECKPOINTS["upsample"].num_parameters, "batch": args.batch, "forward": summary(times)}
    print(f"upsample forward, batch {args.batch} (256×256): median {res['forward']['median_s']:.2f} s, times {times}")
    return res


# ------------------------------------------------------------------------------------------------ memory
def rss_kib(field: str) -> int | None:
    """``VmRSS`` / ``VmHWM`` of this process in KiB (Linux), else None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux ≥ 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def maxrss_kib() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB elsewhere


def pipeline_child(steps: int, threads: int) -> None:
    """Run in a fresh process: build both models, sample once (batch 1, CFG), print one JSON line."""
    torch.set_num_threads(threads)
    base, upsampler = build_glide("base"), build_glide("upsample", seed=1)
    pipe = Text2ImPipeline(base, upsampler, tokenizer=byte_level_tokenizer(), device="cpu")
    built = rss_kib("VmRSS")
    build_peak = maxrss_kib()
    reset = reset_peak_rss()
    trace: list[tuple[str, int | None]] = []  # the peak so far after each network call: does it level off?
    for name, model in (("base", base), ("upsample", upsampler)):
        def record_peak(*_, name: str = name) -> None:
            trace.append((name, rss_kib("VmHWM") if reset else None))

        model.network.register_forward_hook(record_peak)
    t0 = time.perf_counter()
    out = pipe(
        PROMPT, batch_size=1, guidance_scale=3.0, num_inference_steps=steps, upsample_respacing=str(steps), seed=0
    )
    seconds = time.perf_counter() - t0
    assert tuple(out.samples.shape) == (1, 3, 256, 256), out.samples.shape
    print(
        json.dumps(
            {
                "steps": steps,
                "sample_s": seconds,
                "rss_after_build_kib": built,
                "maxrss_during_build_kib": build_peak,
                "peak_while_sampling_kib": rss_kib("VmHWM") if reset else None,
                "ru_maxrss_kib": maxrss_kib(),
                "peak_after_each_forward_kib": trace,
            }
        )
    )


def bench_pipeline(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for steps in args.steps:
        cmd = [sys.executable, __file__, "--child-pipeline", str(steps), "--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode:
            raise SystemExit(f"pipeline subprocess failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(r)
        gib = 1 / 2**20
        sampling = r["peak_while_sampling_kib"]
        print(
            f"pipeline, {steps} base + {steps} upsampler steps: ru_maxrss {r['ru_maxrss_kib'] * gib:.2f} GiB, "
            f"after build {r['rss_after_build_kib'] * gib:.2f} GiB, peak while sampling "
            f"{'n/a' if sampling is None else f'{sampling * gib:.2f} GiB'} ({r['sample_s']:.0f} s sampling)"
        )
        trace = [
            f"{name} {'n/a' if kib is None else f'{kib * gib:.3f}'}" for name, kib in r["peak_after_each_forward_kib"]
        ]
        print(f"  peak so far after each network call (GiB): {', '.join(trace)}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="timed base forwards per attention path")
    parser.add_argument("--attn-repeats", type=int, default=9, help="timed rounds of the attention calls alone")
    parser.add_argument("--up-repeats", type=int, default=2, help="timed upsampler forwards")
    parser.add_argument("--steps", type=int, nargs="*", default=[1, 3], help="pipeline step counts (memory)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["base", "upsample", "pipeline"])
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--child-pipeline", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_pipeline is not None:
        pipeline_child(args.child_pipeline, args.threads)
        return
    torch.set_num_threads(args.threads)
    results: dict[str, Any] = {
        "torch": torch.__version__,
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
    }
    print(f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads, fp32")
    if "base" not in args.skip:
        results["base"] = bench_base(args)
    if "upsample" not in args.skip:
        results["upsample"] = bench_upsampler(args)
    if "pipeline" not in args.skip and args.steps:
        results["pipeline"] = bench_pipeline(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
