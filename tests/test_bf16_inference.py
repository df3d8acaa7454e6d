"""bfloat16 inference: the fast paths give the numbers of the plain float32-softmax/-norm recipe."""

from __future__ import annotations

import math

import pytest
import torch

from glide_edu.nn.fp16 import convert_to_fp16
from glide_edu.pipelines.tiny import tiny_glide_model
from glide_edu.tokenizers import byte_level_tokenizer


def _written_out_attention(qkv: torch.Tensor, heads: int, encoder_kv: torch.Tensor) -> torch.Tensor:
    """The reference's half-precision attention: scores, float32 softmax, back to the input dtype, times v."""
    bs, length, width = qkv.shape
    ch = width // (3 * heads)
    q, k, v = qkv.view(bs, length, heads, 3 * ch).transpose(1, 2).split(ch, dim=-1)
    ek, ev = encoder_kv.view(bs, -1, heads, 2 * ch).transpose(1, 2).split(ch, dim=-1)
    k, v = torch.cat([ek, k], dim=2), torch.cat([ev, v], dim=2)
    scale = 1 / math.sqrt(math.sqrt(ch))
    weights = torch.softmax(((q * scale) @ (k * scale).transpose(-1, -2)).float(), dim=-1)
    return (weights.to(q.dtype) @ v).transpose(1, 2).reshape(bs, length, heads * ch)


def test_bfloat16_attention_is_at_least_as_accurate_as_the_written_out_float32_softmax() -> None:
    from glide_edu.nn.unet import qkv_attention

    torch.manual_seed(0)
    qkv, encoder_kv = torch.randn(2, 64, 3 * 4 * 16), torch.randn(2, 8, 2 * 4 * 16)
    exact = qkv_attention(qkv, 4, encoder_kv)
    torch.testing.assert_close(exact, _written_out_attention(qkv, 4, encoder_kv), rtol=1e-5, atol=1e-5)
    low = [t.to(torch.bfloat16) for t in (qkv, encoder_kv)]
    fused = qkv_attention(low[0], 4, low[1])
    written = _written_out_attention(low[0], 4, low[1])
    assert fused.dtype == torch.bfloat16
    err_fused, err_written = ((y.float() - exact).abs().mean().item() for y in (fused, written))
    assert err_fused <= 1.1 * err_written, (err_fused, err_written)


@pytest.mark.parametrize("channels_last", [False, True])
def test_group_norm_on_bfloat16_equals_the_float32_round_trip(channels_last: bool) -> None:
    """GroupNorm32's bf16 fast path (PyTorch's mixed kernel) gives the reference's float32-and-back numbers."""
    from glide_edu.nn.layers import GroupNorm32

    torch.manual_seed(0)
    norm = GroupNorm32(32, 64, swish=1.0)
    with torch.no_grad():
        norm.weight.normal_(), norm.bias.normal_()
    x = (torch.randn(2, 64, 12, 12) * 3 + 1).to(torch.bfloat16)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    fast = norm(x)
    slow = torch.nn.functional.silu(
        torch.nn.functional.group_norm(x.float(), 32, norm.weight, norm.bias, 1e-5).to(torch.bfloat16)
    )
    assert fast.dtype == torch.bfloat16
    torch.testing.assert_close(fast.float(), slow.float(), rtol=0, atol=0)


def test_bf16_weights_gives_autocast_numbers_and_restores_the_float32_weights() -> None:
    """Casting once per loop (channels-last) must equal autocast's per-call cast, and leave the weights as found."""
    from glide_edu.pipelines.common import bf16_weights

    model = tiny_glide_model("base").network.eval()
    before = {k: (v, v.data_ptr(), v.clone()) for k, v in model.state_dict(keep_vars=True).items()}
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 700])
    tokens, mask = byte_level_tokenizer().tokens_and_mask(["a corgi", ""], 48)
    with torch.no_grad():
        exact = model(x, t, tokens=tokens, mask=mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            per_call = model(x, t, tokens=tokens, mask=mask).float()
        with torch.autocast("cpu", dtype=torch.bfloat16), bf16_weights(model):
            conv = model.input_blocks[0][0].weight
            assert conv.dtype == torch.bfloat16 and conv.is_contiguous(memory_format=torch.channels_last)
            assert model.token_embedding.weight.dtype == torch.float32  # embeddings and norms stay float32
            once = model(x, t, tokens=tokens, mask=mask).float()
    # the same bf16 values; only the kernels' summation order differs (channels-last), so it is as close to
    # the float32 output as autocast alone is
    torch.testing.assert_close(once, per_call, rtol=0, atol=2e-2)
    err_once, err_per_call = ((y - exact).abs().mean().item() for y in (once, per_call))
    assert err_once < 1.25 * err_per_call, (err_once, err_per_call)
    for k, v in model.state_dict(keep_vars=True).items():
        param, ptr, value = before[k]
        assert v is param and v.data_ptr() == ptr and torch.equal(v, value), k
    with pytest.raises(RuntimeError, match="boom"), bf16_weights(model):
        raise RuntimeError("boom")
    assert model.input_blocks[0][0].weight.dtype == torch.float32  # restored on errors too
    convert_to_fp16(model)
    with bf16_weights(model):  # fp16-converted weights are left alone
        assert model.input_blocks[0][0].weight.dtype == torch.float16
