"""Chapter 12 only: measuring the miniature — guidance sweeps for CFG and CLIP guidance, their fronts, GLIDE's claims.

    python -m glide_edu.book regenerate ch12 --sweep      # → data/results/glide_mini_fronts.json
    python -m glide_edu.book regenerate ch12 --by-step RUN_DIR   # → data/results/glide_mini_guides_by_step.json
    python -m glide_edu.book regenerate ch12 --background         # → data/results/glide_mini_background.json

:func:`method_sweep` draws one picture per shapes caption of new scenes (a seed the models never trained on) for
every (method, scale, seed): classifier-
free guidance (``cfg``, s = 1 is the plain conditional model) and CLIP guidance with the noised CLIP
(``clip-noised``) or its clean control (``clip-clean``; s = 0 is again the plain conditional model). Each set is
scored against the real pictures of the same captions: FID-proxy and precision/recall on the picture feature net
(:mod:`glide_edu.text_metrics`), CLIP score under the *independent* evaluation CLIP, the shapes oracle's caption
accuracy, and diversity (mean pairwise feature distance). The same scores of a second set of *real* pictures
(other scenes, their own captions) are the floor: with a hundred pictures in 128 feature dimensions the FID-proxy
of two real sets is far from 0, so only differences above it mean anything, and only between sweeps of the same
size. :func:`claims` turns the rows into GLIDE's three claims, each a measured yes/no with the numbers behind it.

:func:`guides_by_step` asks why the miniature reverses claim (i): it measures the unguided model, CFG and
noised-CLIP guidance at a few scales on the EMA snapshots of the miniature's training run, so the gap between the
two guides can be followed as the conditional model they both start from gets stronger. :func:`background_experiment`
asks what the fronts see: it scores the same pictures as sampled and with their backgrounds set to white
(:func:`whiten_background`), since the book's pictures all lie on white and the miniature's do not quite.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from glide_edu.book import chapter_parser
from glide_edu.metrics import diversity, fid_proxies, precision_recall
from glide_edu.oracle import caption_accuracy
from glide_edu.pipelines.mini import MINI_CHECKPOINT, mini_text2im, sample_prompts
from glide_edu.pretrained import snapshots
from glide_edu.results import RESULTS_DIR, kept_rows, load_results, run_provenance, write_results
from glide_edu.text_metrics import clip_score, dominated_fraction

SWEEP_PATH = RESULTS_DIR / "glide_mini_fronts.json"
SWEEP_SCHEMA = "glide_edu.glide_mini_fronts/1"
BY_STEP_PATH = RESULTS_DIR / "glide_mini_guides_by_step.json"
BY_STEP_SCHEMA = "glide_edu.glide_mini_guides_by_step/1"
# unguided (CFG s = 1), GLIDE's default CFG scale, and the noised CLIP's scale at the knee of its front
BY_STEP_SCALES: dict[str, tuple[float, ...]] = {"cfg": (1.0, 3.0), "clip-noised": (4.0,)}
BACKGROUND_PATH = RESULTS_DIR / "glide_mini_background.json"
BACKGROUND_SCHEMA = "glide_edu.glide_mini_background/1"
REGENERATE = "python -m glide_edu.book regenerate ch12"
METHOD_SCALES: dict[str, tuple[float, ...]] = {
    "cfg": (1.0, 1.5, 2.0, 3.0, 4.0, 6.0),
    "clip-noised": (0.0, 1.0, 2.0, 4.0, 8.0, 16.0),
    "clip-clean": (0.0, 1.0, 2.0, 4.0, 8.0, 16.0),
}
METRICS = ("fid_proxy", "precision", "recall", "clip_score", "oracle", "diversity")
LOWER_IS_BETTER = {"fid_proxy"}
EVAL_SEED = 1234  # the captions' scenes: not the training scenes (seed 0)


def draw(pipes: Mapping[str, Any], method: str, prompts: Sequence[str], scale: float, seed: int, steps: int,
         batch: int = 50) -> torch.Tensor:
    """One picture per prompt from ``pipes[method]`` at guidance scale ``scale``: (N, 3, S, S) in [−1, 1]."""
    if method not in pipes:
        raise ValueError(f"no pipeline for method {method!r}; have {', '.join(pipes)}")
    return sample_prompts(pipes[method], prompts, scale, steps, seed, batch)


def measure(fakes: Sequence[torch.Tensor], prompts: Sequence[str], real: torch.Tensor, net: Any, eval_clip: Any,
            k: int = 3) -> list[dict[str, float]]:
    """The six metrics of each picture set in ``fakes`` (each drawn for ``prompts``) against ``real``."""
    real_feats = net.features(real.clamp(-1, 1))
    fids = fid_proxies(real, list(fakes), net)
    out = []
    for fake, fid in zip(fakes, fids, strict=True):
        precision, recall = precision_recall(real_feats, net.features(fake.clamp(-1, 1)), k=k)
        out.append({"fid_proxy": fid, "precision": precision, "recall": recall,
                    "clip_score": clip_score(eval_clip, fake, prompts),
                    "oracle": caption_accuracy(fake, list(prompts))["caption"], "diversity": diversity(fake, net)})
    return out


@torch.no_grad()
def method_sweep(pipes: Mapping[str, Any], eval_clip: Any, net: Any, prompts: Sequence[str], real: torch.Tensor,
                 scales: Mapping[str, Sequence[float]] | None = None, seeds: Sequence[int] = (0, 1),
                 steps: int = 25, checkpoints: Mapping[str, Any] | None = None,
                 floor: tuple[torch.Tensor, Sequence[str]] | None = None) -> dict[str, Any]:
    """Rows ``{method, scale, seed, <metrics>}`` for every method in ``scales`` (default :data:`METHOD_SCALES`);
    ``checkpoints``: the files used (:func:`glide_edu.results.checkpoint_provenance`), so stale results are refused;
    ``floor``: other real pictures and their captions, scored like a method (``results["floor"]``)."""
    if len(real) != len(prompts):
        raise ValueError(f"{len(real)} real pictures for {len(prompts)} prompts: give the pictures of the prompts")
    if floor is not None and len(floor[0]) != len(floor[1]):
        raise ValueError(f"the floor has {len(floor[0])} pictures for {len(floor[1])} captions")
    start = time.perf_counter()
    scales = dict(scales or METHOD_SCALES)
    rows = []
    for method, method_scales in scales.items():
        for seed in seeds:
            fakes = [draw(pipes, method, prompts, s, seed, steps) for s in method_scales]
            for s, scores in zip(method_scales, measure(fakes, prompts, real, net, eval_clip), strict=True):
                rows.append({"method": method, "scale": s, "seed": seed, **{m: round(v, 5) for m, v in scores.items()}})
    config = {"n_prompts": len(prompts), "steps": steps, "seeds": list(seeds),
              "scales": {m: list(v) for m, v in scales.items()}, "eval_seed": EVAL_SEED}
    results = {"schema": SWEEP_SCHEMA, "config": config, "rows": rows}
    if floor is not None:  # real pictures scored against the real set: what "as good as real" reads as
        (scores,) = measure([floor[0]], floor[1], real, net, eval_clip)
        results["floor"] = {m: round(v, 5) for m, v in scores.items()}
    results["provenance"] = run_provenance(REGENERATE + " --sweep", start, checkpoints=dict(checkpoints or {}))
    return results


def curves(results: Mapping[str, Any]) -> dict[str, dict[str, list[float]]]:
    """method → ``{"scale": [...], <metric>: [mean over seeds, per scale]}``, scales in the sweep's order."""
    out: dict[str, dict[str, list[float]]] = {}
    for method, scales in results["config"]["scales"].items():
        table: dict[str, list[float]] = {"scale": list(scales)}
        for metric in METRICS:
            table[metric] = []
            for s in scales:
                values = [r[metric] for r in results["rows"] if r["method"] == method and r["scale"] == s]
                table[metric].append(sum(values) / len(values))
        out[method] = table
    return out


def points(table: Mapping[str, list[float]], x: str, y: str) -> list[tuple[float, float]]:
    """The (x, y) pairs of one method's curve, for :func:`glide_edu.text_metrics.pareto_front`."""
    return list(zip(table[x], table[y], strict=True))


def better(metric: str) -> bool:
    """Whether larger is better for ``metric`` (False only for the FID-proxy)."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    return metric not in LOWER_IS_BETTER


def front_comparison(table: Mapping[str, Mapping[str, list[float]]], a: str, b: str, x: str, y: str
                     ) -> dict[str, float]:
    """How much of method ``a``'s curve ``b`` dominates in the (x, y) plane, and the reverse (0 to 1 each);
    ``table``: :func:`curves` of a sweep."""
    maximize = (better(x), better(y))
    pa, pb = points(table[a], x, y), points(table[b], x, y)
    return {f"{a}_beaten_by_{b}": dominated_fraction(pa, pb, maximize),
            f"{b}_beaten_by_{a}": dominated_fraction(pb, pa, maximize)}


def claims(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """GLIDE's three claims on the miniature, each ``{"holds": bool, …the numbers it rests on}``.

    (i) CFG's curves are closer to Pareto-optimal: on FID-proxy vs precision and on precision vs recall, CLIP
    guidance's points are dominated by CFG's more often than the reverse. (ii) CLIP guidance reaches a higher
    CLIP score (evaluation CLIP) than CFG, while the oracle's best caption accuracy is CFG's. (iii) the noised
    CLIP guides better than the clean one: higher best CLIP score and best oracle accuracy.
    """
    table = curves(results)
    out: dict[str, dict[str, Any]] = {}
    fronts = {f"{x} vs {y}": front_comparison(table, "clip-noised", "cfg", x, y)
              for x, y in (("fid_proxy", "precision"), ("precision", "recall"))}
    out["i_cfg_closer_to_pareto"] = {
        "holds": all(f["clip-noised_beaten_by_cfg"] > f["cfg_beaten_by_clip-noised"] for f in fronts.values()),
        **fronts}
    best = {m: {metric: max(table[m][metric]) for metric in ("clip_score", "oracle")} for m in table}
    out["ii_clip_score_vs_oracle"] = {
        "holds": best["clip-noised"]["clip_score"] > best["cfg"]["clip_score"]
        and best["cfg"]["oracle"] > best["clip-noised"]["oracle"],
        "best": {m: best[m] for m in ("cfg", "clip-noised")}}
    if "clip-clean" in table:
        out["iii_noised_beats_clean"] = {
            "holds": best["clip-noised"]["clip_score"] > best["clip-clean"]["clip_score"]
            and best["clip-noised"]["oracle"] > best["clip-clean"]["oracle"],
            "best": {m: best[m] for m in ("clip-noised", "clip-clean")}}
    return out


def load_sweep(path: str | Path = SWEEP_PATH, check_checkpoints: bool = True) -> dict[str, Any]:
    """Read ``glide_mini_fronts.json``."""
    return load_results(path, SWEEP_SCHEMA, REGENERATE + " --sweep", check_checkpoints)


def _eval_kit(n: int, with_mini: bool = False) -> tuple[dict[str, Any], Any, Any, Any, dict[str, Any]]:
    """The shipped CLIPs, the picture feature net, the ``n`` evaluation scenes, ``n`` other real scenes and the
    files' provenance (the shipped miniature's too when ``with_mini``: results drawn with it)."""
    from glide_edu.pretrained import shipped_checkpoint
    from glide_edu.results import checkpoint_provenance
    from glide_edu.shapes import load_shapes
    from glide_edu.text_metrics import PICTURE_NET_PATH, load_picture_net
    from glide_edu.train_clip import shipped_clip

    files = [shipped_checkpoint(f"clip_{name}") for name in ("noised", "clean", "eval")] + [PICTURE_NET_PATH]
    if with_mini:
        files.insert(0, shipped_checkpoint(MINI_CHECKPOINT))
    clips = {kind: shipped_clip(kind) for kind in ("noised", "clean", "eval")}
    provenance = {Path(f).stem: checkpoint_provenance(f) for f in files}
    return clips, load_picture_net(), load_shapes(n, EVAL_SEED, "train"), load_shapes(n, EVAL_SEED + 1, "train"), \
        provenance


def _three_settings_config(n: int, seeds: Sequence[int], steps: int) -> dict[str, Any]:
    """The config of a result measured at :data:`BY_STEP_SCALES` (by step, and the background experiment)."""
    return {"n_prompts": n, "steps": steps, "seeds": list(seeds),
            "scales": {m: list(v) for m, v in BY_STEP_SCALES.items()}, "eval_seed": EVAL_SEED}


def guided_pipes(cfg: Any, clips: Mapping[str, Any], names: Sequence[str] = ("noised", "clean")) -> dict[str, Any]:
    """``{"cfg": cfg, "clip-<name>": CLIP guidance with clips[name]}`` on the text-to-image pipeline ``cfg``."""
    from glide_edu.pipelines.clip_guided import ClipGuidedPipeline

    return {"cfg": cfg, **{f"clip-{name}": ClipGuidedPipeline(cfg.base, clips[name], None, cfg.tokenizer)
                           for name in names}}


def book_sweep(n: int = 100, seeds: Sequence[int] = (0, 1), steps: int = 25) -> dict[str, Any]:
    """:func:`method_sweep` with the shipped miniature, the book's three CLIPs and picture feature net."""
    clips, net, data, other, provenance = _eval_kit(n, with_mini=True)
    return method_sweep(guided_pipes(mini_text2im(), clips), clips["eval"], net, data.captions, data.images,
                        seeds=seeds, steps=steps, checkpoints=provenance, floor=(other.images, other.captions))


def guides_by_step(run_dir: str | Path, every: int = 2000, n: int = 100, seeds: Sequence[int] = (0, 1),
                   steps: int = 25, extend: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """:func:`method_sweep` at :data:`BY_STEP_SCALES` on every ``every``-th EMA snapshot of a glide-mini run:
    rows ``{step, method, scale, seed, <metrics>}``. ``extend``: an earlier result with the same settings whose
    rows are kept, so only the snapshots it lacks are measured (a run that went on)."""
    start = time.perf_counter()
    config = _three_settings_config(n, seeds, steps)
    rows = kept_rows(extend, config)
    done = {r["step"] for r in rows}
    clips, net, data, _, provenance = _eval_kit(n)
    for step, path in snapshots(run_dir).items():
        if step % every or step in done:
            continue
        sweep = method_sweep(guided_pipes(mini_text2im(path), clips, ("noised",)), clips["eval"], net,
                             data.captions, data.images, BY_STEP_SCALES, seeds, steps)
        rows += [{"step": step, **row} for row in sweep["rows"]]
    rows.sort(key=lambda r: r["step"])
    return {"schema": BY_STEP_SCHEMA, "config": config, "rows": rows,
            "provenance": run_provenance(REGENERATE + " --by-step …", start, checkpoints=provenance,
                                         extends=extend)}


def by_step_table(results: Mapping[str, Any], metric: str) -> dict[tuple[str, float], dict[int, float]]:
    """(method, scale) → {step: ``metric`` averaged over the seeds} of a :func:`guides_by_step` result."""
    better(metric)  # refuses an unknown metric
    out: dict[tuple[str, float], dict[int, list[float]]] = {}
    for r in results["rows"]:
        out.setdefault((r["method"], r["scale"]), {}).setdefault(r["step"], []).append(r[metric])
    return {key: {st: sum(v) / len(v) for st, v in sorted(by.items())} for key, by in out.items()}


def background_rgb(x: torch.Tensor) -> torch.Tensor:
    """Each picture's median pixel per channel in 0–255 — its background, for a picture on white: (N, 3)."""
    return (x.clamp(-1, 1).flatten(2).median(2).values + 1) * 127.5  # x: (N, 3, H, W) in [−1, 1]


def whiten_background(x: torch.Tensor, max_gain: float = 2.0) -> torch.Tensor:
    """``x`` (N, 3, H, W) in [−1, 1] with each picture's channels scaled (in 0–1 intensity) so that its median pixel
    becomes white: a tinted background turns white and the shapes on it brighten by the same factor, at most
    ``max_gain``; a picture already on white is unchanged."""
    u = (x.clamp(-1, 1) + 1) / 2  # (N, 3, H, W) in [0, 1]
    median = u.flatten(2).median(2).values[..., None, None].clamp(min=1 / max_gain)  # (N, 3, 1, 1)
    return (u / median).clamp(0, 1) * 2 - 1


@torch.no_grad()
def background_experiment(pipes: Mapping[str, Any], eval_clip: Any, net: Any, prompts: Sequence[str],
                          real: torch.Tensor, scales: Mapping[str, Sequence[float]] = BY_STEP_SCALES,
                          seeds: Sequence[int] = (0, 1), steps: int = 25) -> list[dict[str, Any]]:
    """Rows ``{method, scale, seed, background, white_share, sampled: <metrics>, whitened: <metrics>}``: the
    metrics of :func:`measure` for each picture set as drawn and after :func:`whiten_background`; ``background``
    the mean median pixel (RGB, 0–255), ``white_share`` the share of pictures whose median is ≥ 250 in every
    channel. The real pictures come first, as method ``"real"``."""
    sets = [("real", 0.0, 0, real)]
    for method, method_scales in scales.items():
        sets += [(method, s, seed, draw(pipes, method, prompts, s, seed, steps))
                 for seed in seeds for s in method_scales]
    fakes = [x for *_, x in sets]
    sampled = measure(fakes, prompts, real, net, eval_clip)
    whitened = measure([whiten_background(x) for x in fakes], prompts, real, net, eval_clip)
    rows = []
    for (method, s, seed, x), before, after in zip(sets, sampled, whitened, strict=True):
        bg = background_rgb(x)
        rows.append({"method": method, "scale": s, "seed": seed,
                     "background": [round(v, 2) for v in bg.mean(0).tolist()],
                     "white_share": round(float((bg >= 250).all(1).float().mean()), 4),
                     "sampled": {m: round(v, 5) for m, v in before.items()},
                     "whitened": {m: round(v, 5) for m, v in after.items()}})
    return rows


def book_background(n: int = 100, seeds: Sequence[int] = (0, 1), steps: int = 25) -> dict[str, Any]:
    """:func:`background_experiment` with the shipped miniature at :data:`BY_STEP_SCALES`."""
    start = time.perf_counter()
    clips, net, data, _, provenance = _eval_kit(n, with_mini=True)
    rows = background_experiment(guided_pipes(mini_text2im(), clips, ("noised",)), clips["eval"], net,
                                 data.captions, data.images, seeds=seeds, steps=steps)
    return {"schema": BACKGROUND_SCHEMA, "config": _three_settings_config(n, seeds, steps), "rows": rows,
            "provenance": run_provenance(REGENERATE + " --background", start, checkpoints=provenance)}


def load_background(path: str | Path = BACKGROUND_PATH, check_checkpoints: bool = True) -> dict[str, Any]:
    """Read ``glide_mini_background.json``."""
    return load_results(path, BACKGROUND_SCHEMA, REGENERATE + " --background", check_checkpoints)


def load_by_step(path: str | Path = BY_STEP_PATH, check_checkpoints: bool = True) -> dict[str, Any]:
    """Read ``glide_mini_guides_by_step.json``."""
    return load_results(path, BY_STEP_SCHEMA, REGENERATE + " --by-step …", check_checkpoints)


def regenerate(argv: list[str] | None = None) -> None:
    """``python -m glide_edu.book regenerate ch12 --sweep``: the guidance sweeps behind the fronts;
    ``--by-step RUN_DIR``: the two guides along the miniature's training run; ``--background``: the metrics of
    the same pictures with their backgrounds set to white."""
    parser = chapter_parser("ch12", __doc__)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--sweep", action="store_true", help="CFG and CLIP guidance vs scale")
    what.add_argument("--by-step", type=Path, metavar="RUN_DIR", help="a glide-mini run with snapshots")
    what.add_argument("--background", action="store_true", help="the metrics with backgrounds set to white")
    parser.add_argument("--every", type=int, default=2000, help="snapshot spacing for --by-step")
    parser.add_argument("--extend", type=Path, default=None, metavar="JSON",
                        help="--by-step: keep this earlier result's rows, measure only the snapshots it lacks")
    parser.add_argument("--n-prompts", type=int, default=100)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.by_step:
        extend = load_by_step(args.extend, check_checkpoints=False) if args.extend else None
        results = guides_by_step(args.by_step, args.every, args.n_prompts, extend=extend)
        out = args.out or BY_STEP_PATH
    elif args.background:
        results = book_background(n=args.n_prompts)
        out = args.out or BACKGROUND_PATH
    else:
        results = book_sweep(n=args.n_prompts)
        out = args.out or SWEEP_PATH
    print(f"wrote {write_results(results, out)} in {results['provenance']['seconds']} s")
