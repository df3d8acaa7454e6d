"""Start a training run from a file's weights: fine-tuning, or continuing a recipe from a shipped snapshot.

``glide-edu train CONFIG --init-from FILE`` builds the config's network, then copies FILE's weights into it (and
into its EMA copies, so the EMA starts from them too) before the first step. FILE is one of the book's
``.safetensors`` files (a final file, a run's EMA snapshot, the shipped miniature) or an official ``.pt`` state
dict (read with ``weights_only=True``). Every weight must fit: the same names and shapes as the config's network
(``strict`` loading), and for a GLIDE file the same options wherever file and config both name one (a network
trained on CLIP's BPE must not be fine-tuned as if it read bytes).

A file holds no optimiser state, so this is a *warm start*, not a resume: Adam's moments start from zero. With
``continue_steps`` (``--continue-steps``; the miniature's recipe always) the run also takes over the file's
recorded step, so snapshots, curves, the learning-rate schedule and the EMA's warm-up decay go on from there (the
EMA keeps averaging into the file's weights instead of restarting from a copy), and the batch stream is
re-seeded with ``seed + step`` so the continuation does not replay the first run's batches; the file must then
come from the same recipe (all options equal). The file's name, sha256 and step go into the run folder
(``init_from.json``) and into the written file's ``info``. A run folder's own checkpoints (bit-exact resume)
always win: ``--init-from`` on a folder that holds steps is refused.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from glide_edu.fileio import atomic_write_text, sha256_file
from glide_edu.hub.loading import fit_problems, read_state_dict

RECORD = "init_from.json"
# options read by the sampler, not the network (written into a file after training): warm starts ignore them
PRIOR_OPTIONS = ("x0_prior_mean", "x0_prior_above_t")


def read_weights(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(state dict in float32, the file's ``glide_edu`` metadata or {} for a ``.pt``) of a weights file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--init-from {path}: no such file; give a .safetensors written by glide-edu or "
                                "an official .pt")
    if path.suffix == ".pt":
        return {k: v.float() for k, v in read_state_dict(path, f"--init-from {path.name}").items()}, {}
    if path.suffix != ".safetensors":
        raise ValueError(f"--init-from {path.name}: expected a .safetensors or .pt weights file")
    from safetensors import safe_open

    from glide_edu.pretrained import read_metadata

    meta = read_metadata(path)
    with safe_open(path, framework="pt") as f:
        return {k: f.get_tensor(k).float() for k in f.keys()}, meta


def check_fit(what: str, model: nn.Module, state: dict[str, Tensor], fresh: Collection[str] = (),
              fix: str = "train from it with the config it was made with (its options are in its metadata)") -> None:
    """Refuse, in one line naming ``what`` and the ``fix``, a state dict whose names or shapes differ from
    ``model``'s; ``fresh`` names weights the model may have and the file lack (they keep their new values)."""
    problems = fit_problems(state, {k: v.shape for k, v in model.state_dict().items()}, fresh)
    if problems:
        raise ValueError(f"{what} does not fit this network: {'; '.join(problems)}; {fix}")


def check_options(name: str, meta: dict[str, Any], options: dict[str, Any] | None, same_recipe: bool = False) -> None:
    """A GLIDE file's options must agree with the config's wherever both name one (tokenizer, schedule, …); a
    continuation of the same recipe (``same_recipe``) needs every option equal. The sampler's prior is ignored."""
    theirs = meta.get("options")
    if not options or not isinstance(theirs, dict):
        if same_recipe and options:
            raise ValueError(f"--init-from {name} records no GLIDE options; a continuation needs a file of this recipe")
        return
    if same_recipe:
        changed = sorted(k for k in set(theirs) | set(options)
                         if k not in PRIOR_OPTIONS and theirs.get(k) != options.get(k))
        if changed:
            raise ValueError(f"{name} was trained with other options ({', '.join(changed)}); continue it with its own "
                             "options or start a new run without --init-from")
        return
    differ = [f"{k}={theirs[k]!r} (config: {options[k]!r})" for k in sorted(set(theirs) & set(options))
              if k not in PRIOR_OPTIONS and str(theirs[k]) != str(options[k])]
    if differ:
        raise ValueError(f"--init-from {name} was trained with {', '.join(differ)}; use its values "
                         "(--set model.KEY=VALUE) or a file made for this config")


def provenance(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """What the run records about its starting weights."""
    info = meta.get("info") or {}
    return {"file": path.name, "sha256": sha256_file(path), "step": info.get("step", info.get("steps"))}


def warm_start(trainer: Any, path: str | os.PathLike | None, options: dict[str, Any] | None = None, *,
               continue_steps: bool = False) -> dict | None:
    """Copy ``path``'s weights into a fresh trainer's network and EMA copies (with ``continue_steps``, its step
    too); returns the provenance, which is also kept in the run folder. Without ``path``: a resumed
    warm-started run's recorded provenance, or None."""
    run_dir = getattr(trainer, "run_dir", None)
    record = run_dir / RECORD if run_dir is not None else None
    if path is None:
        if record is None or not record.exists():
            return None
        kept = json.loads(record.read_text())
        if trainer.step == 0:
            raise ValueError(f"{run_dir} was started from {kept['file']} but holds no checkpoint yet; run it "
                             f"again with --init-from {kept['file']}")
        return kept
    path = Path(path)
    if trainer.step > 0:
        raise ValueError(f"--init-from starts a new run, but {run_dir} holds step {trainer.step}; continue it with "
                         "--resume alone, or give a new --run-dir")
    if getattr(trainer, "fsdp", False):
        raise ValueError("--init-from with parallel = 'fsdp' is not supported; start with DDP (the default)")
    state, meta = read_weights(path)
    check_options(path.name, meta, options, same_recipe=continue_steps)
    check_fit(f"--init-from {path.name}", trainer.model, state)
    kept = provenance(path, meta)
    if continue_steps and not isinstance(kept["step"], int):
        raise ValueError(f"--init-from {path.name} records no training step to continue from; drop "
                         "--continue-steps to fine-tune from step 0")
    with torch.no_grad():
        trainer.model.load_state_dict(state, strict=True)
        for ema in (trainer.ema, *getattr(trainer, "extra_emas", {}).values()):
            ema.module.load_state_dict(state, strict=True)
            if continue_steps:  # the EMA goes on averaging (its warm-up decay too) instead of copying the network
                ema.n_averaged.fill_(kept["step"])
    if continue_steps:
        trainer.step = kept["step"]
        trainer.generator.manual_seed(trainer.config.seed + trainer.step)  # not the first run's batches again
        torch.manual_seed(trainer.config.seed + trainer.step + getattr(trainer, "rank", 0))  # dropout: per rank
    if record is not None and getattr(trainer, "rank", 0) == 0:
        record.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(record, json.dumps(kept, indent=1))
    return kept
