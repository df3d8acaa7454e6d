"""Exercise checkers of Chapter 1 — the forward process.

* :func:`check_q_sample` — one-shot noising x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε from a table of ᾱ;
* :func:`check_cosine_betas` — Improved DDPM's cosine schedule β_t from ᾱ(u) = cos²((u+s)/(1+s)·π/2);
* :func:`check_snr_crossing` — the first timestep whose signal-to-noise ratio is at most 1;
* :func:`check_forgetting_prediction` — a prediction: which schedule, and which image, drowns first (computed live).

Each checker calls the reader's function on its own random inputs, compares with the library, and on a mismatch
tries the usual mistakes (missing square roots, β and ᾱ confused, off-by-one indices, …) to say which one it is.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from glide_edu.checks import ExerciseError, expect_choice, expect_shape, expect_tensor, passed
from glide_edu.data import load_digits, load_photo
from glide_edu.diffusion import GaussianDiffusion
from glide_edu.schedules import alphas_cumprod, betas_for_alpha_bar, cosine_alpha_bar, get_named_beta_schedule

__all__ = ["check_q_sample", "check_cosine_betas", "check_snr_crossing", "check_forgetting_prediction",
           "correlation_with_clean", "drowning_steps"]


def _call(fn: Callable[..., Any], name: str, *args: Any, hint: str = "", **kwargs: Any) -> Any:
    """Call the reader's function; turn any exception it raises into friendly feedback."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # the reader's code may raise anything
        msg = f"{name} raised {type(exc).__name__}: {exc}"
        raise ExerciseError(msg + (f". Hint: {hint}" if hint else "")) from exc


# ------------------------------------------------------------------------------------------ q_sample
_Q_CASES = (("linear", 1000, (5, 3, 8, 8)), ("cosine", 1000, (7, 1, 4, 4)), ("cosine", 50, (3, 2, 5, 6)))


def _q_sample_alternatives(x0: Tensor, t: Tensor, noise: Tensor, abar: Tensor) -> list[tuple[Tensor, str]]:
    """Results of typical wrong q_sample implementations (float64) and what to tell the reader."""
    view = (-1,) + (1,) * (x0.ndim - 1)
    x, e = x0.double(), noise.double()
    a = abar[t].view(view)
    a_prev = torch.cat([abar.new_ones(1), abar[:-1]])[t].view(view)
    a_next = abar[(t + 1).clamp(max=len(abar) - 1)].view(view)
    alpha_step = a / a_prev  # the one-step α_t = 1 − β_t
    a_first = abar[t[0]].expand(a.shape)
    return [
        (
            a * x + (1 - a) * e,
            "the square roots are missing: the mean is √ᾱ_t·x_0 and the noise is scaled by its standard "
            "deviation √(1−ᾱ_t), not by the variance",
        ),
        (
            a.sqrt() * x + (1 - a) * e,
            "the noise is scaled by the variance 1−ᾱ_t; scale it by the standard deviation √(1−ᾱ_t)",
        ),
        (a * x + (1 - a).sqrt() * e, "the signal is scaled by ᾱ_t; the mean of q(x_t | x_0) is √ᾱ_t·x_0"),
        (
            (1 - a).sqrt() * x + a.sqrt() * e,
            "the two coefficients are swapped — it looks like you used ᾱ_t where β_t belongs "
            "(√(1−β)·x + √β·ε is the one-step formula). The closed form is √ᾱ_t·x_0 + √(1−ᾱ_t)·ε",
        ),
        (
            alpha_step.sqrt() * x + (1 - alpha_step).sqrt() * e,
            "you used the one-step α_t = 1 − β_t = ᾱ_t/ᾱ_{t−1}; jumping from x_0 to x_t needs the product "
            "ᾱ_t = ∏(1 − β_s), which is exactly alphas_cumprod[t]",
        ),
        (
            a_prev.sqrt() * x + (1 - a_prev).sqrt() * e,
            "off by one: you used alphas_cumprod[t − 1]; the book's t is 0-based, use alphas_cumprod[t]",
        ),
        (
            a_next.sqrt() * x + (1 - a_next).sqrt() * e,
            "off by one: you used alphas_cumprod[t + 1]; the book's t is 0-based, use alphas_cumprod[t]",
        ),
        (
            a_first.sqrt() * x + (1 - a_first).sqrt() * e,
            "every sample got the timestep of the first one; each sample b has its own t[b] — index "
            "alphas_cumprod with the whole vector t and reshape the result to (B, 1, 1, 1)",
        ),
        (a.sqrt() * x - (1 - a).sqrt() * e, "the noise is subtracted; add √(1−ᾱ_t)·ε"),
    ]


def check_q_sample(q_sample: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor], seed: int = 0) -> bool:
    """Check ``q_sample(x0, t, noise, alphas_cumprod)`` against :meth:`GaussianDiffusion.q_sample`.

    ``x0`` and ``noise`` are float32 (B, C, H, W), ``t`` an int64 tensor (B,) of 0-based timesteps and
    ``alphas_cumprod`` a float64 tensor (T,). Several schedules, shapes and batches of mixed t are tried.
    """
    name = "q_sample"
    gen = torch.Generator().manual_seed(1_000 + seed)
    for schedule, T, shape in _Q_CASES:
        diffusion = GaussianDiffusion(get_named_beta_schedule(schedule, T), model_var_type="fixed_small")
        abar = torch.from_numpy(diffusion.alphas_cumprod.copy())
        B = shape[0]
        x0 = torch.rand(shape, generator=gen) * 2 - 1
        noise = torch.randn(shape, generator=gen)
        t = torch.randint(0, T, (B,), generator=gen)
        t[0], t[-1] = 0, T - 1  # always include both ends of the chain
        originals = (x0.clone(), t.clone(), noise.clone(), abar.clone())
        where = f"(schedule {schedule!r}, T = {T}, x0 of shape {tuple(shape)})"

        hint = "alphas_cumprod[t] has shape (B,); reshape it to (B, 1, 1, 1) (e.g. .view(-1, 1, 1, 1)) so it "
        out = _call(q_sample, name, x0, t, noise, abar, hint=hint + "multiplies each image of the batch")
        labels = ("x0", "t", "noise", "alphas_cumprod")
        for arg, orig, label in zip((x0, t, noise, abar), originals, labels, strict=True):
            if not torch.equal(arg, orig):
                raise ExerciseError(f"{name} modified its input {label} in place; compute a new tensor instead")
        expect_tensor(out, name)
        expect_shape(out, shape, f"{name} {where}", axes="(B,C,H,W)")
        if not out.is_floating_point():
            raise ExerciseError(f"{name}: expected a floating-point tensor, got dtype {out.dtype}")
        result = out.detach().double()
        if not torch.isfinite(result).all():
            raise ExerciseError(f"{name} {where}: the result contains NaN or inf")

        expected = diffusion.q_sample(x0, t, noise=noise).double()
        if torch.allclose(result, expected, atol=1e-5, rtol=1e-5):
            continue
        for alt, feedback in _q_sample_alternatives(x0, t, noise, abar):
            if torch.allclose(result, alt, atol=1e-5, rtol=1e-5):
                raise ExerciseError(f"{name} {where}: {feedback}")
        again = _call(q_sample, name, x0, t, noise, abar)
        if isinstance(again, Tensor) and not torch.allclose(again.detach().double(), result):
            raise ExerciseError(
                f"{name} {where}: two calls with the same inputs gave different results — use the noise "
                "argument instead of drawing fresh ε inside the function"
            )
        err = (result - expected).abs()
        worst = int(err.argmax())
        raise ExerciseError(
            f"{name} {where}: values differ from √ᾱ_t·x_0 + √(1−ᾱ_t)·ε (largest error {float(err.max()):.3g}: "
            f"got {float(result.flatten()[worst]):.5g}, expected {float(expected.flatten()[worst]):.5g}). "
            "Hint: ab = alphas_cumprod[t].view(-1, 1, 1, 1); return ab.sqrt() * x0 + (1 - ab).sqrt() * noise"
        )
    return passed(name, "matches GaussianDiffusion.q_sample on linear and cosine schedules with mixed timesteps")


# ------------------------------------------------------------------------------------- cosine betas
def _cosine_variant(
    T: int, s: float, max_beta: float, *, power: int = 2, divide: bool = True, shift: int = 0, grid: str = "i/T",
    cap: bool = True,
) -> np.ndarray:
    """Betas of a (possibly wrong) cosine-schedule implementation, for diagnosing mistakes."""

    def f(u: float) -> float:
        phase = (u + s) / (1 + s) if divide else u + s
        return math.cos(phase * math.pi / 2) ** power

    if grid == "linspace":  # T grid points from 0 to 1: only T−1 ratios, padded by repeating the last
        u = np.linspace(0.0, 1.0, T)
        ratios = [f(u[i + 1]) / f(u[i]) for i in range(T - 1)]
        ratios.append(ratios[-1])
    else:
        ratios = [f((i + 1 + shift) / T) / f((i + shift) / T) for i in range(T)]
    betas = 1.0 - np.array(ratios, dtype=np.float64)
    return np.minimum(betas, max_beta) if cap else betas


def _machine_epsilon(out: Any) -> tuple[float, str]:
    """Machine epsilon and name of the answer's floating dtype (float64 for lists, Python floats, integers)."""
    if isinstance(out, Tensor) and out.is_floating_point():
        return float(torch.finfo(out.dtype).eps), str(out.dtype).removeprefix("torch.")
    dtype = getattr(out, "dtype", None)
    if isinstance(dtype, np.dtype) and np.issubdtype(dtype, np.floating):
        return float(np.finfo(dtype).eps), dtype.name
    return float(np.finfo(np.float64).eps), "float64"


def check_cosine_betas(cosine_betas: Callable[..., Any]) -> bool:
    """Check ``cosine_betas(T, s=0.008, max_beta=0.999)`` against :func:`glide_edu.schedules.betas_for_alpha_bar`.

    Called as ``cosine_betas(T)`` for several T, then with explicit ``s`` and ``max_beta``. The tolerance
    follows the answer's dtype: a float32 computation (NumPy or torch) is accepted with float32 rounding, and
    a β capped at float32(0.999) counts as capped.
    """
    name = "cosine_betas"
    cases: list[tuple[int, dict[str, float]]] = [(1000, {}), (64, {}), (20, {}), (40, {"s": 0.02, "max_beta": 0.6})]
    for T, kwargs in cases:
        s, max_beta = kwargs.get("s", 0.008), kwargs.get("max_beta", 0.999)
        call = f"{name}({T}{''.join(f', {k}={v}' for k, v in kwargs.items())})"
        out = _call(cosine_betas, call, T, **kwargs)
        eps, dtype_name = _machine_epsilon(out)
        if eps > np.finfo(np.float32).eps:
            raise ExerciseError(
                f"{call}: the betas are {dtype_name}, which cannot resolve β_0 ≈ 4·10⁻⁵ next to 1 − β; "
                "compute in float64 (NumPy's default) or at least float32"
            )
        # float32 rounding, amplified where ᾱ(u) is tiny near u = 1, allows errors of a few 10⁻⁵ there
        rtol, atol = max(1e-6, 1024 * eps), max(1e-10, 16 * eps)
        if isinstance(out, Tensor):
            out = out.detach().cpu()
            out = out.double().numpy() if out.is_floating_point() else out.numpy()
        try:
            got = np.asarray(out, dtype=np.float64)
        except (TypeError, ValueError):
            raise ExerciseError(f"{call}: expected a 1-D array of T numbers, got {type(out).__name__}") from None
        if got.ndim != 1:
            raise ExerciseError(f"{call}: expected a 1-D array of shape ({T},), got shape {got.shape}")
        if got.shape[0] != T:
            extra = (
                " — T + 1 grid points u = 0, 1/T, …, 1 give T ratios ᾱ((i+1)/T)/ᾱ(i/T), one β per step"
                if got.shape[0] in (T + 1, T - 1)
                else ""
            )
            raise ExerciseError(f"{call}: expected {T} betas (one per step), got {got.shape[0]}{extra}")
        if not np.all(np.isfinite(got)):
            raise ExerciseError(f"{call}: the result contains NaN or inf")

        expected = betas_for_alpha_bar(T, lambda u, s=s: cosine_alpha_bar(u, s), max_beta)
        if np.allclose(got, expected, rtol=rtol, atol=atol):
            continue
        if kwargs and np.allclose(got, _cosine_variant(T, 0.008, 0.999), rtol=rtol, atol=atol):
            raise ExerciseError(f"{call}: your function ignores its s and max_beta arguments (it uses the defaults)")
        abar_expected = alphas_cumprod(expected)
        candidates = [
            (abar_expected, "this looks like ᾱ_t, not β_t; turn it into β_i = 1 − ᾱ((i+1)/T)/ᾱ(i/T)"),
            (
                np.array([cosine_alpha_bar((i + 1) / T, s) for i in range(T)]),
                "this looks like the ᾱ(u) grid, not β; return β_i = 1 − ᾱ((i+1)/T)/ᾱ(i/T)",
            ),
            (_cosine_variant(T, s, max_beta, power=1), "you used cos(·), but ᾱ(u) is the *square* cos²(·)"),
            (_cosine_variant(T, 0.0, max_beta), "the offset s is missing: ᾱ(u) = cos²((u + s)/(1 + s) · π/2)"),
            (
                _cosine_variant(T, s, max_beta, divide=False),
                "the phase must be divided by 1 + s: ᾱ(u) = cos²((u + s)/(1 + s) · π/2)",
            ),
            (
                _cosine_variant(T, s, max_beta, shift=-1),
                "the time grid is shifted by one step: step i (0-based) uses ᾱ((i+1)/T)/ᾱ(i/T)",
            ),
            (
                _cosine_variant(T, s, max_beta, shift=1),
                "the time grid is shifted by one step: step i (0-based) uses ᾱ((i+1)/T)/ᾱ(i/T)",
            ),
            (
                _cosine_variant(T, s, max_beta, grid="linspace"),
                "the time grid must be u = i/T for i = 0 … T (T + 1 points, e.g. np.arange(T + 1) / T), "
                "not np.linspace(0, 1, T)",
            ),
            (
                np.minimum(1.0 - _cosine_variant(T, s, max_beta, cap=False), max_beta),
                "you returned the ratio ᾱ((i+1)/T)/ᾱ(i/T) (that is α_i); β_i is 1 minus it",
            ),
        ]
        for alt, feedback in candidates:
            if alt.shape == got.shape and np.allclose(got, alt, rtol=rtol, atol=atol):
                raise ExerciseError(f"{call}: {feedback}")
        if got.max() > max_beta * (1 + 4 * eps) + 1e-12:  # max_beta itself rounded to the answer's dtype is fine
            raise ExerciseError(
                f"{call}: the largest β is {got.max():.6g} > max_beta = {max_beta} — near u = 1 the ratio "
                "ᾱ((i+1)/T)/ᾱ(i/T) goes to 0 and β to 1; cap every β with min(β, max_beta)"
            )
        i = int(np.argmax(np.abs(got - expected)))
        raise ExerciseError(
            f"{call}: β differs from Improved DDPM's cosine schedule (at t = {i}: got {got[i]:.6g}, expected "
            f"{expected[i]:.6g}). Hint: β_i = min(1 − ᾱ((i+1)/T)/ᾱ(i/T), max_beta) with "
            "ᾱ(u) = cos²((u + s)/(1 + s) · π/2)"
        )
    return passed(name, "equals Improved DDPM's schedule for T = 20, 40, 64, 1000, with the cap honoured")


# ------------------------------------------------------------------------------------- SNR crossing
def _as_index(value: Any, call: str, fraction: float) -> int:
    """The reader's answer as an int; ``fraction`` = expected t/T, to recognise an answer given as t/T."""
    if isinstance(value, (Tensor, np.ndarray)):
        if (value.size if isinstance(value, np.ndarray) else value.numel()) != 1:
            kind = "an array" if isinstance(value, np.ndarray) else "a tensor"
            raise ExerciseError(f"{call}: expected one integer index, got {kind} of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool):
        raise ExerciseError(f"{call}: expected an integer index, got the boolean {value}")
    try:
        return operator.index(value)
    except TypeError:
        pass
    if isinstance(value, float) and abs(value - fraction) < 0.02:
        raise ExerciseError(
            f"{call}: got {value:.4g}, which looks like a fraction t/T; return the timestep index t itself (an int)"
        )
    raise ExerciseError(f"{call}: expected an integer timestep index (0-based), got {value!r}")


def check_snr_crossing(snr_crossing: Callable[[np.ndarray], Any]) -> bool:
    """Check ``snr_crossing(betas)`` — the first 0-based t with SNR(t) = ᾱ_t/(1−ᾱ_t) ≤ 1."""
    name = "snr_crossing"
    cases = [
        ("linear, T = 1000", get_named_beta_schedule("linear", 1000)),
        ("cosine, T = 1000", get_named_beta_schedule("cosine", 1000)),
        ("linear, T = 100", get_named_beta_schedule("linear", 100)),
        ("cosine, T = 37", get_named_beta_schedule("cosine", 37)),
        ("constant β = 0.01, T = 300", np.full(300, 0.01)),
    ]
    for label, betas in cases:
        call = f"{name}(betas) for the {label} schedule"
        abar = alphas_cumprod(betas)
        expected = int(np.argmax(abar / (1 - abar) <= 1.0))
        got = _as_index(_call(snr_crossing, call, betas.copy()), call, fraction=expected / len(betas))
        if got == expected:
            continue
        alpha = 1.0 - betas
        one_step = int(np.argmax(alpha / (1 - alpha) <= 1.0))
        summed = int(np.argmax(np.cumsum(betas) >= 0.5))
        if got == expected + 1:
            feedback = (
                f"got {got}, one step too late: t = {expected} already has SNR ≤ 1. Return the first 0-based index "
                "with SNR ≤ 1 (e.g. int(np.argmax(snr <= 1)))"
            )
        elif got == expected - 1:
            feedback = f"got {got}, the last index with SNR > 1; return the first one with SNR ≤ 1 ({expected} here)"
        elif got == one_step:
            feedback = (
                f"got {got}: it looks like you used the one-step α_t = 1 − β_t; the SNR of q(x_t | x_0) uses "
                "ᾱ_t = ∏(1 − β_s) (np.cumprod(1 - betas))"
            )
        elif got == summed:
            feedback = (
                f"got {got}: it looks like you approximated 1 − ᾱ_t by Σβ_s; that is only valid while β is tiny — "
                "compute ᾱ_t = np.cumprod(1 - betas) exactly"
            )
        else:
            feedback = f"got {got}, expected {expected}. Hint: ᾱ = np.cumprod(1 - betas), snr = ᾱ/(1 − ᾱ)"
        raise ExerciseError(f"{call}: {feedback}")
    return passed(name, "finds the first step with SNR ≤ 1 on linear, cosine and constant schedules")


# ------------------------------------------------------------------- prediction: which image drowns first
DROWNED_BELOW = 0.5  # an image is "drowned" at the first t where corr(x_t, x_0) over its pixels is below this


def correlation_with_clean(x0: Tensor, noise: Tensor, abar: np.ndarray) -> np.ndarray:
    """Exact corr(x_t, x_0) over the pixels of one image for every t, from the moments of x_0 and ε: (T,)."""
    x, e = x0.detach().double().flatten(), noise.detach().double().flatten()
    x, e = x - x.mean(), e - e.mean()
    vx, ve, cxe = float(x @ x), float(e @ e), float(x @ e)
    a = np.asarray(abar, dtype=np.float64)
    sa, sn = np.sqrt(a), np.sqrt(1.0 - a)
    return (sa * vx + sn * cxe) / np.sqrt(vx * (a * vx + (1.0 - a) * ve + 2.0 * sa * sn * cxe))


def _chapter_images() -> dict[str, Tensor]:
    """Chapter 1 § 5's images: the 64×64 cat photograph and the first test digit "3" (16×16)."""
    digits, labels = load_digits(size=16, split="test")
    return {"cat": load_photo("cat", size=64), "digit": digits[labels == 3][:1]}


def drowning_steps(seed: int = 3) -> dict[tuple[str, str], int]:
    """First t with corr(x_t, x_0) < ½ for (image, schedule), T = 1000, ε drawn from ``seed`` as in § 5."""
    gen = torch.Generator().manual_seed(seed)
    noises = {name: torch.randn(img.shape, generator=gen) for name, img in _chapter_images().items()}
    out = {}
    for schedule in ("linear", "cosine"):
        abar = alphas_cumprod(get_named_beta_schedule(schedule, 1000))
        for name, img in _chapter_images().items():
            below = correlation_with_clean(img, noises[name], abar) < DROWNED_BELOW
            out[name, schedule] = int(np.argmax(below)) if below.any() else len(abar)
    return out


def check_forgetting_prediction(first_to_forget: Any, drowns_first: Any) -> bool:
    """Check ``first_to_forget`` ("linear"/"cosine": the schedule that drowns the digit first) and
    ``drowns_first`` ("cat"/"digit": the image that drowns first with the cosine schedule), computed live."""
    guess_schedule = expect_choice(first_to_forget, ("linear", "cosine"), "first_to_forget")
    guess_image = expect_choice(drowns_first, ("cat", "digit"), "drowns_first")
    steps = drowning_steps()
    t_lin, t_cos, t_cat = steps["digit", "linear"], steps["digit", "cosine"], steps["cat", "cosine"]
    problems = []
    if guess_schedule != ("linear" if t_lin < t_cos else "cosine"):
        abar = {k: alphas_cumprod(get_named_beta_schedule(k, 1000))[249] for k in ("linear", "cosine")}
        problems.append(
            f"first_to_forget: it is the {'linear' if t_lin < t_cos else 'cosine'} schedule — the digit's correlation "
            f"with its clean self falls below {DROWNED_BELOW:g} at t = {t_lin} with the linear schedule and at t = "
            f"{t_cos} with the cosine one. Look at the ᾱ_t panel of § 4.3: at t = T/4 the linear schedule has kept "
            f"ᾱ = {abar['linear']:.2f} of the signal power, the cosine one {abar['cosine']:.2f}; the image only "
            "depends on ᾱ_t"
        )
    if guess_image != ("cat" if t_cat < t_cos else "digit"):
        sigma = {name: float(img.std()) for name, img in _chapter_images().items()}
        problems.append(
            f"drowns_first: the {'cat' if t_cat < t_cos else 'digit'} drowns first — under the cosine schedule the "
            f"cat's correlation falls below {DROWNED_BELOW:g} at t = {t_cat}, the digit's at t = {t_cos}. The number "
            f"of pixels does not matter, the contrast does: the cat's pixels have a standard deviation σ_0 = "
            f"{sigma['cat']:.2f}, the digit's {sigma['digit']:.2f}, and the noise (standard deviation √(1−ᾱ_t)) "
            "hides a weak pattern sooner than a strong one — § 5 turns this into a formula"
        )
    if problems:
        raise ExerciseError("\n".join(problems))
    return passed(
        "forgetting prediction",
        f"the digit drowns at t = {t_lin} (linear) and t = {t_cos} (cosine); under the cosine schedule the cat "
        f"at t = {t_cat}, the digit at t = {t_cos}",
    )
