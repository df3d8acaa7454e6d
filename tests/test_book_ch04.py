"""The chapter-4 evaluation (glide_edu.book.ch04) on tiny random-weight checkpoints: structure, seeding, JSON."""

from __future__ import annotations

import json
import math

import pytest
import torch

from glide_edu.book import ch04 as ex
from glide_edu.data import quantize_8bit
from glide_edu.nn.unet import UNetConfig, UNetModel
from glide_edu.pretrained import save_small_checkpoint
from glide_edu.results import initial_noise, write_results

TINY_T = 20  # a short chain keeps the full-chain NLL cheap


def _tiny_checkpoint(path, learned: bool, seed: int):
    torch.manual_seed(seed)
    cfg = UNetConfig(
        image_size=16,
        in_channels=1,
        model_channels=32,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(8,),
        num_head_channels=32,
        learn_sigma=learned,
    )
    model = UNetModel(cfg)
    for p in model.parameters():
        p.data.normal_(0, 0.02)
    var = "learned_range" if learned else "fixed_small"
    diffusion = {"steps": TINY_T, "noise_schedule": "cosine", "model_var_type": var}
    return save_small_checkpoint(path, model, cfg, diffusion, {"command": "test"})


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny nets run fastest on one thread (and two threads crawl on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    return {
        "simple": _tiny_checkpoint(d / "simple.safetensors", False, 0),
        "hybrid": _tiny_checkpoint(d / "hybrid.safetensors", True, 1),
    }


@pytest.fixture(scope="module")
def table(tiny):
    return ex.sampling_steps_table(seeds=(0, 1), long_seeds=(0,), n_samples=8, short_steps=(2, 3), long_steps=(5,),
                                   n_nll=3, checkpoints=tiny, jobs=1, progress=False)


def test_quantize_8bit_lands_on_the_256_levels() -> None:
    x = torch.rand(4, 1, 5, 5) * 2.2 - 1.1
    q = quantize_8bit(x)
    levels = (q + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4) and levels.min() >= 0 and levels.max() <= 255
    assert torch.equal(quantize_8bit(q), q)
    assert (q - x.clamp(-1, 1)).abs().max() <= 1 / 255 + 1e-6


def test_table_structure_and_values(table) -> None:
    assert table["schema"] == ex.SCHEMA
    assert table["config"]["steps"] == [2, 3, 5] and table["config"]["n_samples"] == 8
    assert set(table["results"]) == set(ex.SAMPLERS)
    for name, row in table["results"].items():
        assert set(row) == ({"2", "3", "5"} if name in ex.LONG_SAMPLERS else {"2", "3"})
        for k, c in row.items():
            assert c["seeds"] == ([0] if k == "5" else [0, 1])
            assert set(c) == {"seeds", "fid_proxy", "precision", "recall", "seconds"}
            assert all(0.0 <= v <= 1.0 for v in c["precision"] + c["recall"])
            assert all(math.isfinite(v) for v in c["fid_proxy"]) and len(c["fid_proxy"]) == len(c["seeds"])
    assert set(table["nll_bits_per_dim"]) == set(ex.NLL_ROWS)
    for row in table["nll_bits_per_dim"].values():
        assert row["num_timesteps"] == TINY_T and row["n_images"] == 3
        assert len(row["bpd_per_image"]) == 3 and len(row["vb_per_step"]) == TINY_T
        assert row["bpd_mean"] > 0 and math.isclose(row["bpd_mean"], sum(row["bpd_per_image"]) / 3, rel_tol=1e-4)
        assert math.isclose(sum(row["vb_per_step"]) + row["prior_bpd"], row["bpd_mean"], rel_tol=1e-3)
    assert table["reference"]["n"] == 359 and table["reference"]["fid_proxy"] >= 0
    prov = table["provenance"]
    assert {"date", "torch", "seconds", "checkpoints", "command"} <= set(prov)
    for ck in prov["checkpoints"].values():
        assert not ck["file"].startswith("/")  # no machine-specific paths in the shipped JSON
        assert len(ck["sha256"]) == 64 and ck["info"] == {"command": "test"}


def test_seeds_differ_and_cells_summarise_them(table) -> None:
    fids = table["results"]["hybrid_learned"]["2"]["fid_proxy"]
    assert fids[0] != fids[1]  # the two seeds draw different noise
    mean, half, n = ex.cell(table, "hybrid_learned", 2)
    assert n == 2 and mean == pytest.approx(sum(fids) / 2) and half == pytest.approx(abs(fids[0] - fids[1]) / 2)
    text = ex.format_table(table)
    assert text.count("\n") == 1 + len(ex.SAMPLERS) and "5 steps" in text and "±" in text and "–" in text


def test_parallel_jobs_give_the_same_table(tiny, table) -> None:
    par = ex.sampling_steps_table(seeds=(0, 1), long_seeds=(0,), n_samples=8, short_steps=(2, 3), long_steps=(5,),
                                  n_nll=3, checkpoints=tiny, jobs=2, progress=False)
    for name, row in table["results"].items():  # the same numbers (time aside), whichever process ran a cell
        for k, c in row.items():
            assert {m: v for m, v in par["results"][name][k].items() if m != "seconds"} == \
                {m: v for m, v in c.items() if m != "seconds"}
    for row in table["nll_bits_per_dim"]:
        assert par["nll_bits_per_dim"][row]["bpd_per_image"] == table["nll_bits_per_dim"][row]["bpd_per_image"]


def test_same_seed_same_samples_and_shared_initial_noise(tiny) -> None:
    models = ex.load_models(tiny)
    a = ex.generate_samples(models, "hybrid_learned", 3, 6, seed=5)
    b = ex.generate_samples(models, "hybrid_learned", 3, 6, seed=5)
    c = ex.generate_samples(models, "hybrid_learned", 3, 6, seed=6)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    # a 1-step process only runs t = 0, where no noise is added: Σ is unused, so fixed β̃ and fixed β must
    # agree exactly — which they do only if both started from the same x_T
    small = ex.generate_samples(models, "simple_fixed_small", 1, 6, seed=5)
    large = ex.generate_samples(models, "simple_fixed_large", 1, 6, seed=5)
    assert torch.equal(small, large)
    # the first sample does not depend on how many are drawn (x_T is drawn for the batch at once)
    assert torch.equal(initial_noise(3, 5), initial_noise(6, 5)[:3])


def test_respaced_bound_is_a_coarser_chain(tiny) -> None:
    models = ex.load_models(tiny)
    images = quantize_8bit(torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    full = ex.nll_rows(models, "simple", images)
    assert set(full) == {"simple_fixed_small", "simple_fixed_large"}
    coarse = ex.nll_rows(models, "hybrid", images, steps=5)["hybrid_learned"]
    assert coarse["num_timesteps"] == 5 and len(coarse["vb_per_step"]) == 5


def test_sampler_diffusion_uses_the_respaced_fixed_variances(tiny) -> None:
    models = ex.load_models(tiny)
    d_small = ex.sampler_diffusion(models["simple"], ex.SAMPLERS["simple_fixed_small"], 5)
    d_large = ex.sampler_diffusion(models["simple"], ex.SAMPLERS["simple_fixed_large"], 5)
    assert d_small.num_timesteps == d_large.num_timesteps == 5
    assert d_small.model_var_type.value == "fixed_small" and d_large.model_var_type.value == "fixed_large"
    assert d_small.posterior_variance[1:] == pytest.approx(
        d_small.betas[1:] * (1 - d_small.alphas_cumprod_prev[1:]) / (1 - d_small.alphas_cumprod[1:])
    )
    d_hyb = ex.sampler_diffusion(models["hybrid"], ex.SAMPLERS["ddim_hybrid"], 5)
    assert d_hyb.model_var_type.value == "learned_range"


def test_json_round_trip_and_schema_check(table, tmp_path) -> None:
    path = write_results(table, tmp_path / "out" / "r.json")
    assert ex.load_table(path, check_checkpoints=False) == json.loads(json.dumps(table))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "other"}))
    with pytest.raises(ValueError, match="schema"):
        ex.load_table(bad)
    with pytest.raises(FileNotFoundError, match="regenerate ch04"):
        ex.load_table(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="another"):  # the tiny checkpoints are not the shipped ones
        ex.load_table(path)


def test_widget_grids_round_trip(tiny, tmp_path) -> None:
    models = ex.load_models(tiny)
    path = ex.precompute_grids(models, steps=(2,), n=4, path=tmp_path / "g.safetensors")
    grids, meta = ex.load_grids(path, check_checkpoints=False)
    assert set(grids) == {(s, 2) for s in ex.SAMPLERS} and meta["steps"] == [2] and meta["n"] == 4
    torch.testing.assert_close(grids[("ddim_hybrid", 2)], ex.generate_samples(models, "ddim_hybrid", 2, 4, 0),
                               atol=2e-3, rtol=2e-3)  # stored as float16
    with pytest.raises(ValueError, match="another digits_"):
        ex.load_grids(path)


def test_bad_arguments(tiny) -> None:
    with pytest.raises(ValueError, match="unknown sampler"):
        ex.sampling_steps_table(short_steps=(2,), n_samples=8, samplers=["nope"], checkpoints=tiny, jobs=1)
    with pytest.raises(ValueError, match="n_samples"):
        ex.sampling_steps_table(short_steps=(2,), n_samples=2, checkpoints=tiny, jobs=1)
    with pytest.raises(ValueError, match="fixed"):
        ex.load_models({"simple": tiny["hybrid"], "hybrid": tiny["hybrid"]})
