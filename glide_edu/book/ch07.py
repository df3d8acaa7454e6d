"""Chapter 7 only: GLIDE in miniature, measured by the shapes oracle.

    python -m glide_edu.book regenerate ch07 --curve RUN_DIR   # → data/results/glide_mini_curve.json
    python -m glide_edu.book regenerate ch07 --sweep           # → data/results/glide_mini_guidance.json
    python -m glide_edu.book regenerate ch07 --explorer        # → data/results/glide_mini_explorer.safetensors
    python -m glide_edu.book regenerate ch07 --caption-use RUN_DIR  # → data/results/glide_mini_caption_use.json

:func:`oracle_scores` samples the miniature (through :class:`~glide_edu.pipelines.Text2ImPipeline`, CFG at
scale s) for shapes captions and lets :mod:`glide_edu.oracle` judge every picture against its caption;
:func:`mini_training_curve` does it for every EMA snapshot of a training run (``python -m glide_edu.recipes
glide-mini --run-dir R --snapshot-every N``), at two guidance scales and two seeds — the curve that says
whether the shipped model was trained to a plateau. :func:`caption_use_curve` is its cheap companion (seconds
per snapshot instead of minutes): the denoising error with each held-out picture's own caption against another
picture's and the empty one (:func:`glide_edu.text_metrics.caption_use`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from glide_edu.book import chapter_parser
from glide_edu.oracle import caption_accuracy
from glide_edu.pipelines.mini import (  # noqa: F401  (sample_prompts: re-exported, the chapter calls it)
    MINI_CHECKPOINT,
    mini_text2im,
    mini_views_path,
    regenerate_mini_views,
    sample_prompts,
)
from glide_edu.pretrained import shipped_checkpoint, snapshots
from glide_edu.results import (
    RESULTS_DIR,
    checkpoint_provenance,
    kept_rows,
    load_results,
    run_provenance,
    write_results,
)
from glide_edu.shapes import make_scenes

CURVE_PATH = RESULTS_DIR / "glide_mini_curve.json"
SWEEP_PATH = RESULTS_DIR / "glide_mini_guidance.json"
SWEEP_SCHEMA = "glide_edu.glide_mini_guidance/1"
SWEEP_SCALES = (0.0, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)

CURVE_SCHEMA = "glide_edu.glide_mini_curve/1"
CAPTION_USE_PATH = RESULTS_DIR / "glide_mini_caption_use.json"
CAPTION_USE_SCHEMA = "glide_edu.glide_mini_caption_use/2"  # /2: rows per source
REGENERATE = "python -m glide_edu.book regenerate ch07"
EVAL_SCALES = (1.0, 3.0)
EVAL_SEED = 1234  # the evaluation captions' scenes: not the training scenes (seed 0)


def shapes_prompts(n: int = 100, split: str = "train", seed: int = EVAL_SEED) -> list[str]:
    """``n`` shapes captions from scenes the model was not trained on (``"heldout"``: unseen colour–shape pairs)."""
    return [scene.caption for scene in make_scenes(n, seed, split)]


def oracle_scores(pipe: Any, prompts: Sequence[str], scale: float, steps: int = 25, seed: int = 0) -> dict[str, float]:
    """The oracle's per-attribute and whole-caption accuracy of the pictures ``pipe`` draws for ``prompts``."""
    return caption_accuracy(sample_prompts(pipe, prompts, scale, steps, seed), list(prompts))


def oracle_rows(pipe: Any, prompts: dict[str, Sequence[str]], scales: Sequence[float], seeds: Sequence[int],
                steps: int, **key: Any) -> list[dict[str, Any]]:
    """One row per (scale, seed, split): ``key`` (e.g. the step), the settings and the oracle's accuracies."""
    rows = []
    for scale in scales:
        for seed in seeds:
            for split, caps in prompts.items():
                acc = oracle_scores(pipe, caps, scale, steps, seed)
                rows.append({**key, "scale": scale, "seed": seed, "split": split,
                             **{k: round(v, 4) for k, v in acc.items()}})
    return rows


def shipped_mini() -> dict[str, Any]:
    """The shipped miniature's provenance (for results drawn from its training run), or {} without it."""
    try:
        return {MINI_CHECKPOINT: checkpoint_provenance(shipped_checkpoint(MINI_CHECKPOINT))}
    except FileNotFoundError:
        return {}


def mini_training_curve(run_dir: str | Path, every: int = 1000, n: int = 100, seeds: Sequence[int] = (0, 1),
                        scales: Sequence[float] = EVAL_SCALES, steps: int = 25,
                        extend: dict[str, Any] | None = None) -> dict[str, Any]:
    """Oracle accuracy of every ``every``-th EMA snapshot of a glide-mini run, per scale and seed.

    ``extend``: an earlier curve with the same settings whose rows are kept; only snapshots it lacks are
    measured (a run that went on, or a curve drawn while training).
    """
    start = time.perf_counter()
    prompts = {"train": shapes_prompts(n, "train"), "heldout": shapes_prompts(n, "heldout")}
    config = {"n_prompts": n, "steps": steps, "seeds": list(seeds), "scales": list(scales), "every": every,
              "eval_seed": EVAL_SEED}
    rows = kept_rows(extend, config)
    done = {r["step"] for r in rows}
    for step, path in snapshots(run_dir).items():
        if step % every or step in done:
            continue
        rows += oracle_rows(mini_text2im(path), prompts, scales, seeds, steps, step=step)
    rows.sort(key=lambda r: r["step"])
    return {"schema": CURVE_SCHEMA, "config": config, "rows": rows,
            "provenance": run_provenance(REGENERATE + " --curve …", start, checkpoints=shipped_mini(), extends=extend)}


def guidance_sweep(pipe: Any = None, scales: Sequence[float] = SWEEP_SCALES, n: int = 100,
                   seeds: Sequence[int] = (0, 1), steps: int = 25) -> dict[str, Any]:
    """Oracle accuracy of the shipped miniature vs the CFG scale s, on trained and held-out pairs, per seed."""
    start = time.perf_counter()
    pipe = pipe or mini_text2im()
    prompts = {"train": shapes_prompts(n, "train"), "heldout": shapes_prompts(n, "heldout")}
    rows = oracle_rows(pipe, prompts, scales, seeds, steps)
    shipped = {MINI_CHECKPOINT: checkpoint_provenance(shipped_checkpoint(MINI_CHECKPOINT))}
    return {"schema": SWEEP_SCHEMA, "config": {"n_prompts": n, "steps": steps, "seeds": list(seeds),
                                               "scales": list(scales), "eval_seed": EVAL_SEED},
            "rows": rows, "provenance": run_provenance(REGENERATE + " --sweep", start, checkpoints=shipped)}


def load_guidance_sweep(path: str | Path = SWEEP_PATH, check_checkpoints: bool = True) -> dict[str, Any]:
    """Read ``glide_mini_guidance.json``; refuse it if it was computed with another miniature."""
    return load_results(path, SWEEP_SCHEMA, REGENERATE + " --sweep", check_checkpoints)


def sweep_table(results: dict[str, Any], key: str = "caption") -> dict[str, dict[float, tuple[float, float]]]:
    """split → scale → (mean, spread over seeds) of the oracle's ``key`` accuracy."""
    table: dict[str, dict[float, list[float]]] = {}
    for row in results["rows"]:
        table.setdefault(row["split"], {}).setdefault(row["scale"], []).append(row[key])
    return {split: {s: (sum(v) / len(v), max(v) - min(v)) for s, v in by_scale.items()}
            for split, by_scale in table.items()}


def load_mini_curve(path: str | Path = CURVE_PATH, check_checkpoints: bool = True) -> dict[str, Any]:
    """Read ``glide_mini_curve.json``; refuse it if its final model is not the shipped one."""
    return load_results(path, CURVE_SCHEMA, REGENERATE + " --curve …", check_checkpoints)


def held_out_pictures(n: int = 256, seed: int = EVAL_SEED) -> tuple[torch.Tensor, list[str], list[str]]:
    """``n`` held-out pictures (emoji and shapes, drawn with the training mix's weights), their captions and each
    one's source ("emoji" or "shapes")."""
    from glide_edu.captions import book_captions

    data = book_captions("heldout", n_shapes=max(n, 64), seed=seed)
    idx = torch.multinomial(data.weights, n, replacement=False, generator=torch.Generator().manual_seed(seed))
    rows = idx.tolist()
    return data.images[idx], [data.captions[i] for i in rows], [data.source[i] for i in rows]


def top_of_schedule(pipe: Any, n: int = 8, t_near: int = 980, seed: int = 0) -> dict[str, Any]:
    """Why the miniature samples with the data-mean prior (:mod:`glide_edu.prior`), measured on ``pipe``'s model.

    * ``raw_x0_at_T``: the mean of x̂₀ = (x_T − √(1−ᾱ_T)·ε̂)/√ᾱ_T the network reports for pure noise at t = T − 1
      (before any clipping): its ε̂ cannot carry the picture's mean there;
    * ``x0_mean_zero`` / ``x0_mean_real``: the mean of the (clipped) x̂₀ at ``t_near`` for an x_t of mean 0 (what
      the first steps of a plain loop leave) and for a noised training picture (mean √ᾱ·μ);
    * ``data_mean``: μ per channel of the training mix; ``sample_mean``: per channel, of samples for ``n`` / 2
      shapes captions (two each, s = 3, 25 steps), with the prior ("prior") and without ("plain").
    """
    import dataclasses

    from glide_edu.captions import book_captions
    from glide_edu.pipelines.stages import encode_prompts
    from glide_edu.prior import data_mean

    model = pipe.base
    data = book_captions("train", 2000, 0)
    mu = data_mean(data.images, data.weights)
    shapes_rows = [i for i, src in enumerate(data.source) if src == "shapes"][:n]
    x0, captions = data.images[shapes_rows], [data.captions[i] for i in shapes_rows]  # (n, 3, 32, 32)
    text = encode_prompts(pipe.tokenizer, captions, model, pipe.device)
    full = model.diffusion("")
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, Any] = {"data_mean": [round(v, 3) for v in mu], "t_near": t_near}
    with torch.no_grad():
        last = full.num_timesteps - 1
        x_T = torch.randn(x0.shape, generator=gen)
        eps = model.network(x_T, torch.full((n,), last), **text)[:, :3]
        out["raw_x0_at_T"] = float(full.predict_xstart_from_eps(x_T, last, eps).mean())
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.full((n,), t_near)
        for name, x_t in (("zero", noise), ("real", full.q_sample(x0, t, noise))):
            pred = full.p_mean_variance(model.network, x_t, t, model_kwargs=text)["pred_xstart"]
            out[f"x0_mean_{name}"] = float(pred.mean())
    prompts = captions[: max(1, n // 2)]
    plain = dataclasses.replace(model, x0_prior_mean=None)
    prior = dataclasses.replace(model, x0_prior_mean=model.x0_prior_mean or mu)
    means = {}
    for name, m in (("prior", prior), ("plain", plain)):
        pipe.base = m
        try:
            samples = pipe(prompts, batch_size=2, guidance_scale=3.0, num_inference_steps=25, seed=seed,
                           upsample=False).samples  # (n, 3, 32, 32)
        finally:
            pipe.base = model
        means[name] = [round(float(v), 3) for v in samples.mean(dim=(0, 2, 3))]
    out["sample_mean"] = means
    return out


def caption_use_curve(run_dir: str | Path, every: int = 500, n: int = 256, seeds: Sequence[int] = (0, 1),
                      extend: dict[str, Any] | None = None) -> dict:
    """:func:`glide_edu.text_metrics.caption_use` of every ``every``-th EMA snapshot of a glide-mini run, on
    ``n`` held-out pictures, once per noise seed (the spread): a row per (step, seed, source), source "emoji" or
    "shapes" — each measured on its own, since the emoji's larger errors would swamp the shapes' in a pooled ratio.
    ``extend``: an earlier result with the same settings whose rows are kept; only snapshots it lacks are measured."""
    from glide_edu.captions import tokenize_captions
    from glide_edu.pipelines.mini import load_mini_model
    from glide_edu.pretrained import read_metadata
    from glide_edu.text_metrics import caption_use
    from glide_edu.train_text import tokenizer_for

    start = time.perf_counter()
    images, captions, source = held_out_pictures(n)
    subsets = {name: torch.tensor([i for i, s in enumerate(source) if s == name]) for name in ("emoji", "shapes")}
    config = {"n_pictures": n, "seeds": list(seeds), "every": every, "timesteps": [100, 400, 700],
              "eval_seed": EVAL_SEED}
    rows = kept_rows(extend, config)
    done = {r["step"] for r in rows}
    for step, path in snapshots(run_dir).items():
        if step % every or step in done:
            continue
        options = read_metadata(path)["options"]
        tokens, mask = tokenize_captions(tokenizer_for(options), captions, int(options["text_ctx"]))
        model = load_mini_model(path)
        for seed in seeds:
            for name, rows_of in subsets.items():
                if len(rows_of) < 2:
                    continue
                use = caption_use(model.network, model.diffusion(""), images[rows_of], tokens[rows_of],
                                  mask[rows_of], seed=seed)
                rows.append({"step": step, "seed": seed, "source": name, "n": len(rows_of),
                             **{k: round(v, 6) for k, v in use.items()}})
    rows.sort(key=lambda r: (r["step"], r["seed"], r["source"]))
    return {"schema": CAPTION_USE_SCHEMA, "config": config, "rows": rows,
            "provenance": run_provenance(REGENERATE + " --caption-use …", start, checkpoints=shipped_mini(),
                                         extends=extend)}


def load_caption_use(path: str | Path = CAPTION_USE_PATH, check_checkpoints: bool = True) -> dict[str, Any]:
    """Read ``glide_mini_caption_use.json``; refuse it if the run's shipped model is not the shipped one."""
    return load_results(path, CAPTION_USE_SCHEMA, REGENERATE + " --caption-use …", check_checkpoints)


def regenerate(argv: list[str] | None = None) -> None:
    """``python -m glide_edu.book regenerate ch07 --curve RUN_DIR``: the miniature's training curve."""
    parser = chapter_parser("ch07", __doc__)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--curve", type=Path, metavar="RUN_DIR", help="a glide-mini run with --snapshot-every")
    what.add_argument("--sweep", action="store_true", help="oracle accuracy vs CFG scale")
    what.add_argument("--explorer", action="store_true", help="the widget's precomputed views")
    what.add_argument("--caption-use", type=Path, metavar="RUN_DIR", help="own vs other vs empty caption errors")
    parser.add_argument("--every", type=int, default=None,
                        help="snapshot spacing (default 1000; 500 for --caption-use)")
    parser.add_argument("--extend", "--curve-extend", type=Path, default=None, metavar="JSON", dest="extend",
                        help="with --curve or --caption-use: keep this earlier result's rows and measure only the "
                             "snapshots it lacks")
    parser.add_argument("--n-prompts", type=int, default=100)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.explorer:
        print(f"wrote {regenerate_mini_views(args.out or mini_views_path())}")
        return
    if args.caption_use:
        extend = load_caption_use(args.extend, check_checkpoints=False) if args.extend else None
        results = caption_use_curve(args.caption_use, args.every or 500, extend=extend)
        out = args.out or CAPTION_USE_PATH
    elif args.sweep:
        results = guidance_sweep(n=args.n_prompts)
        out = args.out or SWEEP_PATH
    else:
        extend = load_mini_curve(args.extend, check_checkpoints=False) if args.extend else None
        results = mini_training_curve(args.curve, args.every or 1000, args.n_prompts, extend=extend)
        out = args.out or CURVE_PATH
    print(f"wrote {write_results(results, out)} in {results['provenance']['seconds']} s")
