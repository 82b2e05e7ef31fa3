"""The linear-RNN operator of LION-RetNet: exact pure-torch retention, three forms.

Retention (RetNet, Sun et al. 2023) of one head, for a sequence of length L
with queries ``q [L, dk]``, keys ``k [L, dk]``, values ``v [L, dv]`` and a decay
``gamma`` in (0, 1):

- parallel (the oracle): ``O = (Q K^T * D) V`` with ``D[n, m] = gamma^(n-m)``
  for ``n >= m`` and 0 otherwise;
- recurrent: ``S_n = gamma S_(n-1) + k_n^T v_n``, ``o_n = q_n S_n`` (state
  ``[dk, dv]``, O(L) time, O(1) memory in L);
- chunked: parallel inside chunks of ``C`` steps, the recurrent state carried
  across chunks: ``O_c = (Q_c K_c^T * D_C) V_c + (Q_c S_(c-1)) * gamma^(i+1)``,
  ``S_c = gamma^C S_(c-1) + (K_c * gamma^(C-1-j))^T V_c``.

All three compute the same function (no normalisation inside the operator;
the layer normalises after it), so the parallel form checks the other two.
Tensors are ``[B, H, L, d]`` (batch, heads, steps, channels); ``gamma`` is
``[H]``. On CUDA, :func:`retention` uses the Triton chunked kernel of
flash-linear-attention (``fla``) when it is importable; it is never required.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn


def _decay_powers(gamma: torch.Tensor, n: int, like: torch.Tensor) -> torch.Tensor:
    """``[H, n]`` with ``gamma_h ** i`` for i in 0..n-1 (computed in log space)."""
    i = torch.arange(n, device=like.device, dtype=like.dtype)
    return torch.exp(torch.log(gamma.to(like))[:, None] * i[None, :])


def decay_mask(gamma: torch.Tensor, n: int, like: torch.Tensor) -> torch.Tensor:
    """``D [H, n, n]``: ``gamma^(a-b)`` where a >= b, else 0."""
    i = torch.arange(n, device=like.device, dtype=like.dtype)
    diff = i[:, None] - i[None, :]
    logd = torch.log(gamma.to(like))[:, None, None] * diff.clamp(min=0)[None]
    return torch.exp(logd) * (diff >= 0).to(like)[None]


def retention_parallel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Parallel form, O(L^2): ``q, k [B, H, L, dk]``, ``v [B, H, L, dv]``, ``gamma [H]`` -> ``[B, H, L, dv]``."""
    D = decay_mask(gamma, q.shape[2], q)
    return ((q @ k.transpose(-1, -2)) * D[None]) @ v


def retention_recurrent(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Recurrent form, one step at a time (slow; a reference for the chunked form)."""
    B, H, L, dk = q.shape
    S = q.new_zeros(B, H, dk, v.shape[-1])
    g = gamma.to(q)[None, :, None, None]
    out = []
    for n in range(L):
        S = g * S + k[:, :, n, :, None] * v[:, :, n, None, :]
        out.append((q[:, :, n, None, :] @ S)[:, :, 0])
    return torch.stack(out, 2) if out else v.new_zeros(B, H, 0, v.shape[-1])


def retention_chunked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gamma: torch.Tensor,
                      chunk: int = 64) -> torch.Tensor:
    """Chunked form, O(L C): parallel inside chunks of ``chunk`` steps, recurrent across them."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    B, H, L, dk = q.shape
    dv = v.shape[-1]
    C = min(chunk, max(L, 1))
    pad = (-L) % C
    if pad:  # zero keys/values add nothing to the state; padded outputs are dropped
        q, k, v = (torch.nn.functional.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    n = q.shape[2] // C
    qc, kc, vc = (t.reshape(B, H, n, C, -1) for t in (q, k, v))
    D = decay_mask(gamma, C, q)  # [H, C, C]
    inner = ((qc @ kc.transpose(-1, -2)) * D[None, :, None]) @ vc  # [B, H, n, C, dv]
    pw = _decay_powers(gamma, C + 1, q)  # [H, C+1]
    q_dec = pw[:, 1:]  # gamma^(i+1)
    k_dec = pw[:, :C].flip(-1)  # gamma^(C-1-j)
    kv = (kc * k_dec[None, :, None, :, None]).transpose(-1, -2) @ vc  # [B, H, n, dk, dv] chunk contributions
    gC = pw[:, C][None, :, None, None]
    S = q.new_zeros(B, H, dk, dv)
    states = []
    for c in range(n):  # state entering chunk c
        states.append(S)
        S = gC * S + kv[:, :, c]
    Sprev = torch.stack(states, 2)  # [B, H, n, dk, dv]
    cross = (qc @ Sprev) * q_dec[None, :, None, :, None]
    return (inner + cross).reshape(B, H, n * C, dv)[:, :, :L]


@functools.lru_cache(maxsize=1)
def _fla_chunk_retention():
    """flash-linear-attention's Triton chunked retention, or None when not importable."""
    try:
        from fla.ops.retention import chunk_retention  # type: ignore[import-not-found]
    except Exception:
        return None
    return chunk_retention


def _kernel_call(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """fla's chunk_retention on ``[B, H, L, d]`` tensors (fla takes ``[B, L, H, d]``), unscaled."""
    kernel = _fla_chunk_retention()
    out = kernel(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=1.0, output_final_state=False)
    out = out[0] if isinstance(out, tuple) else out
    return out.transpose(1, 2)


@functools.lru_cache(maxsize=8)
def _kernel_agrees(device: str, heads: int) -> bool:
    """One-time check on ``device`` that the kernel computes :func:`retention_chunked` (layout, decays, scale).

    fla's call conventions differ between versions; a kernel that disagrees (or fails) is not used.
    """
    try:
        g = torch.Generator(device="cpu").manual_seed(0)
        q, k, v = (torch.randn(1, heads, 80, 16, generator=g).div(4).to(device) for _ in range(3))
        ref = retention_chunked(q.double(), k.double(), v.double(), retnet_gammas(heads).to(device))
        got = _kernel_call(q, k, v).double()
        return bool(torch.allclose(got, ref, rtol=2e-2, atol=2e-2))
    except Exception:
        return False


def fused_kernel_available(device: torch.device, heads: int = 1) -> bool:
    """True when a CUDA Triton retention kernel is importable on ``device`` and agrees with the torch forms."""
    return device.type == "cuda" and _fla_chunk_retention() is not None and _kernel_agrees(str(device), heads)


def retention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gamma: torch.Tensor, chunk: int = 64,
              use_kernel: bool = True) -> torch.Tensor:
    """Retention by the fastest exact route: the fla Triton kernel on CUDA when importable, else chunked torch.

    The fla kernel fixes ``gamma_h = 1 - 2^(-5-h)`` (RetNet's schedule); it is used only when
    ``gamma`` is exactly that schedule and a one-time check on the device agrees with
    :func:`retention_chunked`, so results never depend on whether it is installed.
    """
    H = q.shape[1]
    if (use_kernel and q.device.type == "cuda" and torch.equal(gamma.double().cpu(), retnet_gammas(H))
            and fused_kernel_available(q.device, H)):
        return _kernel_call(q, k, v)  # pragma: no cover - GPU with fla only
    return retention_chunked(q, k, v, gamma, chunk)


def retnet_gammas(heads: int) -> torch.Tensor:
    """RetNet's per-head decays ``1 - 2^(-5-h)``, ``[heads]`` float64."""
    return 1.0 - torch.pow(2.0, -5.0 - torch.arange(heads, dtype=torch.float64))


class MultiScaleRetention(nn.Module):
    """A RetNet layer over sequences: ``x [B, L, C] -> [B, L, C]``.

    q/k/v projections into ``heads`` heads, retention with per-head decays
    (:func:`retnet_gammas`), per-head group norm, a swish gate and an output
    projection (as RetNet). Keys are scaled by ``dk^-1/2``.
    """

    def __init__(self, dim: int, heads: int = 4, chunk: int = 64):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.heads, self.chunk = heads, chunk
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.gate = nn.Linear(dim, dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.norm = nn.GroupNorm(heads, dim)
        self.register_buffer("gamma", retnet_gammas(heads).float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape
        h = self.heads
        q, k, v = self.qkv(x).view(B, L, 3, h, C // h).permute(2, 0, 3, 1, 4)
        k = k / math.sqrt(C // h)
        o = retention(q, k, v, self.gamma, self.chunk)  # [B, h, L, d]
        o = self.norm(o.transpose(1, 2).reshape(B * L, C)).view(B, L, C)
        return self.out(torch.nn.functional.silu(self.gate(x)) * o)
