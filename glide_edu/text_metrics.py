"""Measuring text-to-image samples of the book's pictures: FID-proxy features, CLIP score, Pareto fronts.

* :class:`PictureFeatureNet` — the FID-proxy's feature space for 32×32 RGB emoji and shapes, as the digit
  feature net is for digits (:mod:`glide_edu.metrics`, whose FID-proxy, precision/recall and diversity
  functions take it as ``net``). It is a small CNN trained to name what a picture shows — the emoji's
  subgroup ("face-smiling", "animal-mammal", …) or the shapes scene's kind, colour and shape — and its
  128-dimensional penultimate layer is the feature. Rebuilt by ``python -m glide_edu.recipes picture-features``.
* :func:`clip_score` — the mean of 100·cos(f(x), g(c)) under a CLIP that played no part in sampling
  (the book's *evaluation* CLIP; GLIDE's paper scores with a public CLIP the same way).
* :func:`caption_use` — how much a text-conditional network reads its captions: its denoising error with
  each picture's own caption against another picture's caption and the empty one (cheap enough to run on
  every training snapshot; chapter 7's plateau check).
* :func:`pareto_front` — the non-dominated points of a sweep (e.g. one point per guidance scale with its
  FID-proxy and precision); :func:`dominated_fraction` — how much of one method's sweep another dominates.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from glide_edu.fileio import atomic_write
from glide_edu.pretrained import DATA_DIR

PICTURE_NET_PATH = DATA_DIR / "fid_pictures.safetensors"


class PictureFeatureNet(nn.Module):
    """A small CNN on (N, 3, 32, 32) pictures in [−1, 1]: ``features`` (N, 128), ``logits`` (N, num_classes)."""

    num_features = 128
    input_size = (3, 32, 32)

    def __init__(self, num_classes: int) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, stride=stride), nn.GroupNorm(8, cout), nn.SiLU()]

        self.body = nn.Sequential(
            *block(3, 32, 1), *block(32, 64, 2), *block(64, 64, 1), *block(64, 128, 2), *block(128, 128, 2),  # 4×4
            nn.Flatten(), nn.Linear(128 * 16, self.num_features), nn.SiLU(),
        )
        self.head = nn.Linear(self.num_features, num_classes)

    def features(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_size:
            raise ValueError(f"the picture feature net takes (N, 3, 32, 32) images, got {tuple(x.shape)}")
        return self.body(x.float())

    def logits(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def forward(self, x01: Tensor) -> Tensor:
        """torchmetrics entry point: images in [0, 1] (or uint8) → features (N, 128)."""
        x = x01.float() / 255.0 if x01.dtype == torch.uint8 else x01.float()
        if x.shape[-1] != 32:
            x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
        return self.features(x * 2 - 1)


def picture_labels(split: str = "train", n_shapes: int = 20000, seed: int = 0) -> tuple[Tensor, Tensor, list[str]]:
    """(images, class ids, class names): emoji by subgroup, shapes by "kind / colour / shape" of the first shape."""
    from glide_edu.emoji import load_emoji
    from glide_edu.shapes import load_shapes

    emoji, shapes = load_emoji(split), load_shapes(n_shapes, seed, split)
    names = [f"emoji: {s}" for s in emoji.subgroups]
    names += [f"shapes: {sc.kind} / {sc.shapes[0].colour} / {sc.shapes[0].shape}" for sc in shapes.scenes]
    classes = sorted(set(names))
    index = {c: i for i, c in enumerate(classes)}
    return torch.cat([emoji.images, shapes.images]), torch.tensor([index[n] for n in names]), classes


def train_picture_net(epochs: int = 8, seed: int = 0, n_shapes: int = 20000) -> tuple[PictureFeatureNet, float]:
    """Train the feature net (±2 px shifts, emoji over-sampled to half of every batch); returns it and its
    accuracy on held-out shapes scenes of other seeds (emoji have no second copy to test on)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x, y, classes = picture_labels("train", n_shapes, seed)
    is_emoji = torch.tensor([c.startswith("emoji") for c in classes])[y]
    weights = torch.where(is_emoji, 0.5 / is_emoji.sum(), 0.5 / (~is_emoji).sum())
    net = PictureFeatureNet(len(classes))
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = epochs * len(x) // 128
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    for _ in range(steps):
        idx = torch.multinomial(weights, 128, replacement=True, generator=gen)
        shift = torch.randint(-2, 3, (2,), generator=gen).tolist()
        xb = torch.roll(x[idx], shifts=shift, dims=(2, 3))
        loss = F.cross_entropy(net.logits(xb), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    xt, yt, classes_t = picture_labels("train", 2000, seed + 1)
    keep = torch.tensor([c.startswith("shapes") for c in classes_t])[yt]
    names_t = [classes_t[i] for i in yt[keep].tolist()]
    with torch.no_grad():
        pred = net.logits(xt[keep]).argmax(1).tolist()
    accuracy = sum(classes[p] == n for p, n in zip(pred, names_t, strict=True)) / max(len(names_t), 1)
    net.classes = classes
    return net, accuracy


def save_picture_net(net: PictureFeatureNet, path: str | os.PathLike = PICTURE_NET_PATH) -> Path:
    """Write the weights (safetensors, with the class names in the metadata), atomically."""
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    meta = {"classes": "\n".join(getattr(net, "classes", []))}
    return atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))


def load_picture_net(path: str | os.PathLike = PICTURE_NET_PATH) -> PictureFeatureNet:
    """The shipped picture feature net (eval mode)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; rebuild it with: python -m glide_edu.recipes picture-features")
    state = load_file(str(path))
    net = PictureFeatureNet(state["head.weight"].shape[0])
    net.load_state_dict(state, strict=True)
    return net.eval()


@torch.no_grad()
def clip_score(clip, images: Tensor, captions: Sequence[str], batch: int = 256) -> float:
    """Mean 100·cos(f(x, t=0), g(c)) over pairs of ``images`` ([−1, 1]) and ``captions`` under ``clip``."""
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images for {len(captions)} captions: give one caption per image")
    total = 0.0
    for i in range(0, len(captions), batch):
        tokens, lens = clip.encode_prompts(list(captions[i: i + batch]))
        z_text = clip.text_embeddings(tokens, lens)
        z_image = clip.image_embeddings(images[i: i + batch].clamp(-1, 1), 0)
        total += float((100.0 * (z_text * z_image).sum(-1)).sum())
    return total / len(captions)


def dominates(u: tuple[float, float], v: tuple[float, float], maximize: tuple[bool, bool] = (True, True)) -> bool:
    """Whether point ``u`` is at least as good as ``v`` in both coordinates and better in one."""
    sign = [1.0 if m else -1.0 for m in maximize]
    du, dv = [sign[k] * u[k] for k in (0, 1)], [sign[k] * v[k] for k in (0, 1)]
    return du[0] >= dv[0] and du[1] >= dv[1] and (du[0] > dv[0] or du[1] > dv[1])


def pareto_front(points: Sequence[tuple[float, float]], maximize: tuple[bool, bool] = (True, True)) -> list[int]:
    """Indices of the non-dominated points (no other point is at least as good in both and better in one)."""
    return [i for i, v in enumerate(points)
            if not any(dominates(u, v, maximize) for j, u in enumerate(points) if j != i)]


def dominated_fraction(a: Sequence[tuple[float, float]], b: Sequence[tuple[float, float]],
                       maximize: tuple[bool, bool] = (True, True)) -> float:
    """The fraction of ``a``'s points that some point of ``b`` dominates (0: none; 1: all of ``a`` is beaten)."""
    if not a:
        raise ValueError("a has no points")
    return sum(any(dominates(u, v, maximize) for u in b) for v in a) / len(a)


def other_captions(tokens: Tensor, seed: int = 0) -> Tensor:
    """A permutation π of the N rows of ``tokens`` (N, L) with tokens[π[i]] ≠ tokens[i] for every i: each
    picture gets *another* picture's caption (captions repeat in the shapes data, so a plain shuffle is not
    enough). Raises if some caption is on more than half of the rows (no such pairing exists)."""
    n = tokens.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    differ = lambda i, j: not torch.equal(tokens[i], tokens[j])  # noqa: E731
    for i in range(n):
        if differ(i, int(perm[i])):
            continue
        for k in range(n):  # swap partners with a row k for which both new pairs differ
            if differ(i, int(perm[k])) and differ(k, int(perm[i])):
                perm[i], perm[k] = perm[k].clone(), perm[i].clone()
                break
        else:
            raise ValueError("no pairing with other captions exists: one caption is on more than half the rows")
    return perm


@torch.no_grad()
def caption_use(network: nn.Module, diffusion, images: Tensor, tokens: Tensor, mask: Tensor, *,
                timesteps: Sequence[int] = (100, 400, 700), seed: int = 0, batch: int = 128) -> dict[str, float]:
    """How much a text-conditional GLIDE ``network`` reads its captions.

    The mean ε-prediction error E‖ε − ε_θ(x_t, t, c)‖² (the first 3 output channels) on ``images`` (N, 3, S, S)
    at each of ``timesteps``, for three captions c with the *same* x_t and ε (seeded): each picture's own
    (``tokens``/``mask``, N × text_ctx), another picture's (:func:`other_captions`) and the empty caption (all
    padding, mask off — what classifier-free guidance's unconditional half sees). Returns the three errors and
    the ratios ``other_over_own`` and ``empty_over_own``: 1.0 for a network that ignores the text, growing as
    it learns to use it.
    """
    if not (~mask.bool()).any():
        raise ValueError("the captions fill text_ctx: no padding token to build the empty caption from")
    pad = int(tokens[~mask.bool()][0])
    gen = torch.Generator().manual_seed(seed)
    perm = other_captions(tokens, seed)
    captions = {"own": (tokens, mask), "other": (tokens[perm], mask[perm]),
                "empty": (torch.full_like(tokens, pad), torch.zeros_like(mask, dtype=torch.bool))}
    totals = dict.fromkeys(captions, 0.0)
    was_training = network.training
    network.eval()
    for t in timesteps:
        noise = torch.randn(images.shape, generator=gen)  # (N, 3, S, S)
        t_batch = torch.full((images.shape[0],), int(t), dtype=torch.long)
        x_t = diffusion.q_sample(images, t_batch, noise)
        for name, (tok, msk) in captions.items():
            for i in range(0, images.shape[0], batch):
                rows = slice(i, i + batch)
                eps = network(x_t[rows], t_batch[rows], tokens=tok[rows], mask=msk[rows])[:, :3]
                totals[name] += float(((eps - noise[rows]) ** 2).sum())
    network.train(was_training)
    count = images.numel() * len(timesteps)
    out = {name: total / count for name, total in totals.items()}
    out["other_over_own"] = out["other"] / out["own"]
    out["empty_over_own"] = out["empty"] / out["own"]
    return out
