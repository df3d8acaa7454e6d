"""Sample-quality metrics that run offline: an FID-proxy and k-NN precision/recall on digit features.

**This is not Inception-FID.** FID (Heusel et al. 2017) is the Fréchet distance between Gaussians fitted
to Inception-v3 features of real and generated images. Inception's weights are a download and it expects
299×299 RGB photographs, so on 16×16 digits it would measure mostly resizing artefacts. The book instead
trains a small CNN classifier on the digits (shipped in ``data/``, rebuilt with
``python -m glide_edu.recipes fid-features``) and uses its 64-dimensional penultimate layer as the feature
space. The Fréchet distance itself is computed by torchmetrics' ``FrechetInceptionDistance`` with this
network as its custom feature extractor. Numbers are comparable only with other numbers from the same
feature network.

Precision and recall (Kynkäänniemi et al. 2019): each real feature gets a ball reaching its k-th nearest
real neighbour; precision is the fraction of generated features inside at least one real ball (fidelity),
recall the fraction of real features inside at least one generated ball (coverage/diversity).
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

FEATURE_NET_PATH = DATA_DIR / "fid_digits.safetensors"


class DigitFeatureNet(nn.Module):
    """A small CNN on (N, 1, 16, 16) digits: ``features`` (N, 64) for the FID-proxy, ``logits`` (N, 10).

    As a torchmetrics feature extractor it is called on images in [0, 1] (``normalize=True``).
    """

    num_features = 64
    input_size = (1, 16, 16)

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.GroupNorm(8, 32),
            nn.SiLU(),
            nn.Conv2d(32, 64, 3, padding=1, stride=2),
            nn.GroupNorm(8, 64),
            nn.SiLU(),  # 8×8
            nn.Conv2d(64, 64, 3, padding=1, stride=2),
            nn.GroupNorm(8, 64),
            nn.SiLU(),  # 4×4
            nn.Flatten(),
            nn.Linear(64 * 16, self.num_features),
            nn.SiLU(),
        )
        self.head = nn.Linear(self.num_features, 10)

    def features(self, x: Tensor) -> Tensor:
        """x in [−1, 1], (N, 1, 16, 16) → (N, 64)."""
        if x.ndim != 4 or x.shape[1:] != (1, 16, 16):
            raise ValueError(f"the digit feature net takes (N, 1, 16, 16) images, got {tuple(x.shape)}")
        return self.body(x.float())

    def logits(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def forward(self, x01: Tensor) -> Tensor:
        """torchmetrics entry point: images in [0, 1] (or uint8 0..255) → features (N, 64)."""
        x = x01.float() / 255.0 if x01.dtype == torch.uint8 else x01.float()
        if x.shape[1] == 3:  # torchmetrics probes with RGB dummies; digits are gray
            x = x.mean(dim=1, keepdim=True)
        if x.shape[-1] != 16:
            x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False, antialias=True)
        return self.features(x * 2 - 1)


def train_feature_net(epochs: int = 30, seed: int = 0) -> tuple[DigitFeatureNet, float]:
    """Train the feature network on the training digits (random ±1 px shifts); returns (net, test accuracy)."""
    from glide_edu.data import load_digits

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x, y = load_digits(16, "train")
    net = DigitFeatureNet()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 64):
            idx = order[i : i + 64]
            shift = torch.randint(-1, 2, (2,), generator=gen).tolist()
            xb = torch.roll(x[idx], shifts=shift, dims=(2, 3))
            loss = F.cross_entropy(net.logits(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval(), classifier_accuracy(net, *load_digits(16, "test"))


@torch.no_grad()
def classifier_accuracy(net: DigitFeatureNet, images: Tensor, labels: Tensor) -> float:
    """Fraction of ``images`` classified as ``labels``."""
    return float((net.logits(images).argmax(1) == labels).float().mean())


def save_feature_net(net: DigitFeatureNet, path: str | os.PathLike = FEATURE_NET_PATH) -> Path:
    """Write the feature network's weights (safetensors), atomically."""
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    return atomic_write(path, lambda tmp: save_file(state, tmp))


def load_feature_net(path: str | os.PathLike = FEATURE_NET_PATH) -> DigitFeatureNet:
    """The shipped digit feature network (eval mode)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; rebuild it with: python -m glide_edu.recipes fid-features")
    net = DigitFeatureNet()
    net.load_state_dict(load_file(str(path)), strict=True)
    return net.eval()


@torch.no_grad()
def fid_proxy(real: Tensor, fake: Tensor, net: DigitFeatureNet | None = None) -> float:
    """Fréchet distance between digit-feature Gaussians of ``real`` and ``fake`` (both [−1, 1] NCHW).

    Computed by torchmetrics' FrechetInceptionDistance with :class:`DigitFeatureNet` as the feature
    extractor — an FID-*proxy*, not Inception-FID (see the module docstring).
    """
    return fid_proxies(real, [fake], net)[0]


@torch.no_grad()
def fid_proxies(real: Tensor, fakes: Sequence[Tensor], net: DigitFeatureNet | None = None) -> list[float]:
    """:func:`fid_proxy` of each set in ``fakes`` against one ``real`` set, whose statistics are computed once."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    for name, images in (("real", real), *(("fake", f) for f in fakes)):
        if images.ndim != 4 or images.shape[0] < 2:
            raise ValueError(f"{name} images must be (N >= 2, C, H, W), got {tuple(images.shape)}")
    net = net or load_feature_net()
    size = tuple(getattr(net, "input_size", (1, 16, 16)))  # the feature net's own input (C, H, W)
    metric = FrechetInceptionDistance(feature=net, normalize=True, input_img_size=size, reset_real_features=False)
    metric.update(((real.clamp(-1, 1) + 1) / 2).float(), real=True)
    scores = []
    for fake in fakes:
        metric.reset()  # forgets the fake statistics only (reset_real_features=False)
        metric.update(((fake.clamp(-1, 1) + 1) / 2).float(), real=False)
        scores.append(float(metric.compute()))
    return scores


def _kth_neighbour_radii(feats: Tensor, k: int) -> Tensor:
    d = torch.cdist(feats, feats)  # (N, N)
    return d.kthvalue(k + 1, dim=1).values  # k+1: the point itself is at distance 0


@torch.no_grad()
def precision_recall(real_feats: Tensor, fake_feats: Tensor, k: int = 3) -> tuple[float, float]:
    """k-NN precision and recall (Kynkäänniemi et al. 2019) between two feature sets (N, D)."""
    if real_feats.shape[0] <= k or fake_feats.shape[0] <= k:
        raise ValueError(
            f"need more than k={k} samples in each set, got {real_feats.shape[0]} and {fake_feats.shape[0]}"
        )
    real, fake = real_feats.double(), fake_feats.double()
    r_real, r_fake = _kth_neighbour_radii(real, k), _kth_neighbour_radii(fake, k)
    d = torch.cdist(fake, real)  # (F, R)
    precision = (d <= r_real[None, :]).any(dim=1).double().mean()
    recall = (d.T <= r_fake[None, :]).any(dim=1).double().mean()
    return float(precision), float(recall)


@torch.no_grad()
def sample_quality(real: Tensor, fake: Tensor, net: DigitFeatureNet | None = None, k: int = 3) -> dict[str, float]:
    """FID-proxy, precision and recall of ``fake`` against ``real`` digits in one call."""
    net = net or load_feature_net()
    p, r = precision_recall(net.features(real), net.features(fake), k=k)
    return {"fid_proxy": fid_proxy(real, fake, net), "precision": p, "recall": r}


@torch.no_grad()
def diversity(images: Tensor, net: DigitFeatureNet | None = None) -> float:
    """Mean pairwise Euclidean distance between the digit features of ``images`` ([−1, 1], (N, 1, 16, 16)).

    0 when every sample is the same image; larger when the samples spread out in feature space. Like the
    FID-proxy it is only comparable between numbers computed with the same feature network.
    """
    if images.ndim != 4 or images.shape[0] < 2:
        raise ValueError(f"diversity needs (N >= 2, 1, 16, 16) images, got {tuple(images.shape)}")
    net = net or load_feature_net()
    feats = net.features(images.clamp(-1, 1)).double()
    n = feats.shape[0]
    return float(torch.pdist(feats).sum() * 2 / (n * (n - 1)))


@torch.no_grad()
def guided_sample_quality(
    real: Tensor, fake: Tensor, labels: Tensor, net: DigitFeatureNet | None = None, k: int = 3
) -> dict[str, float]:
    """Everything a guidance sweep reports for ``fake`` samples drawn for target ``labels``.

    Returns ``fid_proxy``, ``precision``, ``recall`` (against ``real``, see :func:`sample_quality`),
    ``accuracy`` (the feature net, a clean classifier trained apart from any guiding classifier, agrees with
    the target label) and ``diversity`` (:func:`diversity`, averaged over the classes present in ``labels``
    so that it measures spread *within* a class, not the spread between classes).
    """
    if labels.shape != (fake.shape[0],):
        raise ValueError(f"need one label per sample: {fake.shape[0]} samples, labels of shape {tuple(labels.shape)}")
    net = net or load_feature_net()
    out = sample_quality(real, fake, net, k=k)
    out["accuracy"] = classifier_accuracy(net, fake, labels)
    per_class = [diversity(fake[labels == c], net) for c in labels.unique().tolist() if int((labels == c).sum()) >= 2]
    if not per_class:
        raise ValueError("diversity needs at least two samples of some class")
    out["diversity"] = float(sum(per_class) / len(per_class))
    return out


@torch.no_grad()
def bits_per_dim(model, diffusion, images: Tensor, seed: int = 0) -> dict:
    """The variational bound of ``diffusion`` with ``model`` on ``images`` (already 8-bit), in bits/dim.

    A summary of :meth:`calc_bpd_loop` (x̂_0 clipped, as the sampler does): ``bpd_mean`` and its standard error
    over images, ``bpd_per_image``, the prior term L_T, the decoder term L_0 and every term L_t averaged over
    images (``vb_per_step``, t = 0 … T−1). With a respaced ``diffusion`` it bounds the K-step model's NLL.
    """
    out = diffusion.calc_bpd_loop(model, images, generator=torch.Generator().manual_seed(seed))
    total = out["total_bpd"].double()
    n = total.numel()
    return {
        "num_timesteps": diffusion.num_timesteps,
        "n_images": n,
        "bpd_mean": float(total.mean()),
        "bpd_sem": float(total.std() / n**0.5) if n > 1 else float("nan"),
        "bpd_per_image": [round(float(v), 5) for v in total],
        "prior_bpd": float(out["prior_bpd"].double().mean()),
        "decoder_bpd": float(out["vb"][:, 0].double().mean()),  # L_0 = −log p(x_0 | x_1)
        "vb_per_step": [float(f"{float(v):.5g}") for v in out["vb"].double().mean(0)],  # L_t, t = 0…T−1
    }
