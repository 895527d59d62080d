"""A bf16 screen of the logit lens's unembedding, certified per row (`decode: bf16_screen`).

The lens's cost is the float32 product x · E^T (x = norm_f(h), [rows, d]; E [V, d]). The screen
computes it in bfloat16 (float16 on CUDA for float16 models), which a CPU with AVX-512 BF16 runs ~3×
faster (docs/ARCHITECTURE.md), takes the top K = k + MARGIN tokens of each row by the screened
logits z~, and re-scores those candidates (and y*, the final layer's argmax) exactly, in float64
from the float32 inputs. A row keeps the screen's answer only when a certificate proves that the
float32 decode has the same top-k ids in the same order; any other row is decoded in float32
exactly as `decode: fp32` does.

The certificate rests on a bound, per row, of the screen's error on every logit
(`ScreenWeights.logit_bound`; it assumes what oneDNN's AVX-512 BF16 kernels and cuBLAS with a
float32 output do: the products of two bfloat16 or two float16 numbers are exact in float32, and
sums are float32):  |z~_v - z_v| <= A + c·|z~_v|  for every token v, with
  A = sum_i |dx_i||E^_vi| + sum_i |x_i||dE_vi| + gamma_d sum_i |x^_i||E^_vi|   (bounded for the
      worst v by Cauchy-Schwarz or by the column maxima of |E^|, whichever is smaller)
  dx = x - x^ (the rounding of x, known exactly), dE = E - E^ (of E, known exactly), gamma_d the
  float32 accumulation bound d·2^-24/(1 - d·2^-24), and c = u/(1-u) for a bfloat16 output (u = 2^-8,
  its rounding) or 0 for a float32 one, plus float32's 2^-23 for the bias.
A row is certified when
  (1) the k-th exact logit, less float32's rounding, exceeds tau + A + c|tau|, tau the smallest
      candidate's screened logit (no other token's is larger): no other token can be in the top k;
  (2) consecutive exact logits among the first k+1 differ by more than float32's rounding of each
      (fp32_rounding): float32 orders them as exact arithmetic does.
So the top-k ids equal the float32 decode's (tests/test_lens_screen.py). What a screen cannot
certify is a sum over the whole vocabulary: the normaliser, the entropy and the rank of y* use the
candidates' exact logits and the screened logits of every other token. Their bounds follow from the
one above (docs/METHODS.md, "bf16 screen"), but for a flat distribution they are about A itself
(0.07 nats on GPT-2's shape, ~1 on SmolLM2's), where the float32 decode's errors are ~1e-6, so a
certificate on the sums would send nearly every row back to float32: the screen states those
bounds instead, is opt-in, and flags per cell (`screened`) which rows hold screened sums.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch

MARGIN = 11  # candidates beyond the top k (K = 16 at k = 5): K = 32 certified no more rows (docs/BENCHMARKS.md)
LAMBDA = 10.0  # confidence of the float32 near-tie test (fp32_rounding)
U32 = 2.0 ** -24  # float32's unit roundoff
UNIT = {torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}
SAFETY = 1 + 2.0 ** -10  # the bound's own float32 arithmetic (norms, sums over d < 16384 terms)
RESCORE_ROWS = 64  # rows per step of the exact re-score (exact_dots): its float64 copies stay ~7 MB
VOCAB_CHUNK = 4096  # rows of E per step when measuring it: no [V, d] float32 temporary


def gamma(n: int, u: float = U32) -> float:
    """The worst-case bound on the relative error of an n-term sum of products, any order
    (Higham, Accuracy and Stability of Numerical Algorithms, 2002, eq. 3.4)."""
    return n * u / (1 - n * u)


def screen_dtype(E: torch.Tensor) -> torch.dtype:
    """float16 for a float16 model on CUDA (11 bits, fast there and exact for its weights); else
    bfloat16 (the one half type a CPU multiplies fast, with AVX-512 BF16 or AMX)."""
    return torch.float16 if E.dtype == torch.float16 and E.is_cuda else torch.bfloat16


@dataclass
class ScreenWeights:
    """The low-precision copy of E and the few numbers of E the error bounds need."""

    Eh: torch.Tensor  # [V, d] in the screen's dtype
    u: float  # unit roundoff of that dtype
    eh_row: float  # max_v ||E^_v||
    eh_col: torch.Tensor  # [d] max_v |E^_vi|
    de_row: float  # max_v ||E_v - E^_v||
    de_col: torch.Tensor  # [d] max_v |E_vi - E^_vi|
    e_row: float  # max_v ||E_v|| (float32 E: the float32 decode's own error)
    e_col: torch.Tensor
    bias_max: float  # max_v |b_v|, 0 without a bias

    @staticmethod
    def of(E: torch.Tensor, E32: torch.Tensor, bias: torch.Tensor | None) -> "ScreenWeights":
        dt = screen_dtype(E)
        Eh = E if E.dtype == dt else E32.to(dt)
        d = E32.shape[1]
        stats = {n: torch.zeros(d, device=E32.device) for n in ("eh_col", "de_col", "e_col")}
        rows = dict.fromkeys(("eh_row", "de_row", "e_row"), 0.0)
        for v0 in range(0, E32.shape[0], VOCAB_CHUNK):
            e, eh = E32[v0 : v0 + VOCAB_CHUNK], Eh[v0 : v0 + VOCAB_CHUNK].float()
            for name, m in (("eh", eh), ("de", e - eh), ("e", e)):
                torch.maximum(stats[f"{name}_col"], m.abs().amax(0), out=stats[f"{name}_col"])
                rows[f"{name}_row"] = max(rows[f"{name}_row"], float(m.norm(dim=1).max()))
        bias_max = float(bias.abs().max()) if bias is not None else 0.0
        return ScreenWeights(Eh, UNIT[dt], **rows, **stats, bias_max=bias_max)

    def logit_bound(self, x: torch.Tensor, xh: torch.Tensor, fp32_out: bool) -> tuple[torch.Tensor, float]:
        """(A [n], c): |z~_v - z_v| <= A + c·|z~_v| for every token v of each row (module docstring)."""
        xf = xh.float()
        dx = x - xf
        t1 = torch.minimum(dx.norm(dim=1) * self.eh_row, dx.abs() @ self.eh_col)
        t2 = torch.minimum(x.norm(dim=1) * self.de_row, x.abs() @ self.de_col)
        t3 = gamma(x.shape[1]) * torch.minimum(xf.norm(dim=1) * self.eh_row, xf.abs() @ self.eh_col)
        c_out = 0.0 if fp32_out else self.u / (1 - self.u)
        c = c_out + 2 * U32  # + the float32 addition of the bias
        # products below float32's normal range may be flushed to zero: 2^-126 each at most
        A = (t1 + t2 + t3 + x.shape[1] * 2.0 ** -126) * SAFETY + c * self.bias_max
        return A, c

    def row_sum(self, x: torch.Tensor) -> torch.Tensor:
        """[n] bound on sum_i |x_i||E_vi| over every token v (+ max |b|): the scale of a logit's rounding."""
        return torch.minimum(x.norm(dim=1) * self.e_row, x.abs() @ self.e_col) + self.bias_max


def screen_weights(cache: dict, E: torch.Tensor, E32: torch.Tensor, bias) -> ScreenWeights:
    """The ScreenWeights of E, kept in `cache` (a pass's scratch) while E is the same tensor."""
    key = (E.data_ptr(), tuple(E.shape), E.dtype, str(E.device))
    if cache.get("screen_key") != key:
        cache["screen"], cache["screen_key"] = ScreenWeights.of(E, E32, bias), key
    return cache["screen"]


@contextlib.contextmanager
def _float32_reduction():
    """cuBLAS may reduce a half-precision GEMM's split-K partial sums in half precision (torch
    allows it by default); the bound needs float32 sums, so disallow it for the screen's product."""
    m = torch.backends.cuda.matmul
    saved = (m.allow_bf16_reduced_precision_reduction, m.allow_fp16_reduced_precision_reduction)
    m.allow_bf16_reduced_precision_reduction = m.allow_fp16_reduced_precision_reduction = False
    try:
        yield
    finally:
        m.allow_bf16_reduced_precision_reduction, m.allow_fp16_reduced_precision_reduction = saved


def screened_logits(xh: torch.Tensor, Eh: torch.Tensor, buf: torch.Tensor | None) -> tuple[torch.Tensor, bool]:
    """x^ · E^T and whether it is in float32: on CUDA a half GEMM with a float32 output where torch
    offers one (no output rounding), else the half-precision output (CPU: into the reused `buf`)."""
    if xh.is_cuda:
        with _float32_reduction():
            try:
                return torch.mm(xh, Eh.T, out_dtype=torch.float32), True
            except (TypeError, RuntimeError):  # a torch without mm(..., out_dtype)
                return xh @ Eh.T, False
    return torch.matmul(xh, Eh.T, out=buf), False


def fp32_rounding(n: int) -> float:
    """Relative size of a float32 dot product's rounding error (of sum |x_i y_i|), n terms, in the
    probabilistic analysis of Higham & Mary (SIAM J. Sci. Comput. 41(5), 2019, Thm 2.4): exceeded
    with probability at most 2n·exp(-LAMBDA²(1-u)²/2) (3e-19 at n = 769) when rounding errors are
    independent and mean zero. Used only to ask whether float32 could order two near-equal logits
    otherwise; the worst-case bound (gamma) would send a quarter of GPT-2's rows to the fallback."""
    return math.expm1(LAMBDA * math.sqrt(n) * U32 + n * U32 * U32 / (1 - U32))


def exact_dots(E32: torch.Tensor, x: torch.Tensor, idx: torch.Tensor, absolute: bool = False) -> torch.Tensor:
    """[n, m] float64 E[idx[r, j]] · x[r] (or |E|·|x|): float32 inputs are exact in float64, so these
    are the exact logits to ~1e-13. RESCORE_ROWS rows at a time, so the gathered rows stay small."""
    out = torch.empty(idx.shape, dtype=torch.float64, device=x.device)
    step = x.shape[0] if x.is_cuda else RESCORE_ROWS  # a GPU has the memory, and pays per launch
    for a in range(0, x.shape[0], step):
        e, v = E32[idx[a : a + step]].double(), x[a : a + step].double()
        if absolute:
            e, v = e.abs_(), v.abs_()
        out[a : a + step] = torch.bmm(e, v.unsqueeze(2)).squeeze(2)
    return out


@dataclass
class Screened:
    """One block's screen: candidates, their exact logits and the certificate."""

    cand: torch.Tensor  # [n, K] token ids, the top K by screened logit (unordered)
    cand_values: torch.Tensor  # [n, K] their logits, computed in float64 and rounded to float32
    ids: torch.Tensor  # [n, k] the top k by exact logit, in order
    top: torch.Tensor  # [n, k] their logits (float32)
    z_star: torch.Tensor  # [n] logit of y* (float32 of the float64 value)
    beats_outside: torch.Tensor  # [n] bool: condition (1), no other token can reach the top k
    ordered: torch.Tensor  # [n] bool: condition (2), no float32 near-tie among the first k + 1
    logits: torch.Tensor  # [n, V] screened logits (with the bias, when the model has one)

    @property
    def certified(self) -> torch.Tensor:
        return self.beats_outside & self.ordered


def screen(w: ScreenWeights, E32: torch.Tensor, bias, x: torch.Tensor, target: torch.Tensor, k: int,
           buf: torch.Tensor | None, z_out: torch.Tensor) -> Screened:
    """Screen rows x [n, d] (float32), re-score the top k + MARGIN and y* exactly, certify.

    With a bias the screened logits plus bias are written to z_out (float32) and ranked there."""
    n, d, V = x.shape[0], x.shape[1], E32.shape[0]
    K = min(k + MARGIN, V)
    xh = x.to(w.Eh.dtype)
    zs, fp32_out = screened_logits(xh, w.Eh, buf)
    if bias is not None:
        zs = torch.add(zs, bias, out=z_out)
    top = zs.topk(K, dim=-1, sorted=False)
    # every token outside the candidates has a screened logit <= the smallest candidate's
    outside = top.values.float().amin(1) if K < V else torch.full((n,), -math.inf, device=x.device)
    cand = top.indices
    rows = torch.cat([cand, target.view(n, 1)], 1)
    z = exact_dots(E32, x, rows)
    if bias is not None:
        z += bias[rows].double()
    values, order = z[:, :K].sort(dim=1, descending=True)
    scale = w.row_sum(x).double()
    exact_err = gamma(d + 1, 2.0 ** -53) * scale  # of the float64 re-score
    # (1) no token outside the candidates can reach the k-th, in exact or float32 arithmetic
    A, c = w.logit_bound(x, xh, fp32_out)
    row_eps = fp32_rounding(d + 1) * scale + 2 * U32 * values[:, 0].abs()
    reach = outside.double() + (A + c * outside.abs()).double()
    beats_outside = values[:, k - 1] - exact_err - row_eps > reach
    # (2) float32 orders the first k + 1 as exact arithmetic does (no near-tie at its rounding)
    s_top = exact_dots(E32, x, cand.gather(1, order[:, : k + 1]), absolute=True) + w.bias_max
    eps = fp32_rounding(d + 1) * s_top + 2 * U32 * (values[:, : k + 1].abs() + values[:, :1].abs())
    gaps = values[:, :k] - values[:, 1 : k + 1]
    ordered = (gaps > eps[:, :k] + eps[:, 1:] + 2 * exact_err.unsqueeze(1)).all(1)
    return Screened(cand, z[:, :K].float(), cand.gather(1, order[:, :k]), values[:, :k].float(), z[:, K].float(),
                    beats_outside, ordered, zs)
