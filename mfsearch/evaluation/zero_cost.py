"""Zero-cost proxies: score an architecture at initialisation on one minibatch, in seconds.

Each proxy maps ``(cfg, x, y, seed)`` to a float where HIGHER means "predicted better":

* ``synflow`` (Tanaka et al. 2020): data-free synaptic flow. The model is copied to float64,
  every parameter is replaced by its absolute value, BatchNorm is in eval mode (its running
  statistics at initialisation are mean 0 / variance 1, an affine identity), an all-ones input
  of one example goes through and ``R = sum(output)``; the score is ``sum |theta * dR/dtheta|``
  over all parameters. On the seven presets (32x32 and 224x224 inputs) the sum stays far from
  overflow (about 1e4 to 1e5), so the plain sum is returned, not its logarithm.
* ``grad_norm`` (Abdelfattah et al. 2021): train mode, cross-entropy on the batch, the sum over
  parameter tensors of the L2 norm of their gradient.
* ``snip`` (Lee et al. 2019, as used by Abdelfattah et al. 2021): ``sum |theta * dL/dtheta|``
  with the same loss and gradients.
* ``jacob_cov`` (Mellor et al. 2021, v1): the gradient of the summed logits with respect to
  each input image, flattened to ``N x D``; with ``C`` its correlation matrix and ``v`` the
  eigenvalues, the score is ``-sum(log(v + 1e-5) + 1 / (v + 1e-5))``. Train mode.
* ``naswot`` (Mellor et al. 2021, v2): binary activation codes, the sign pattern ``out > 0`` of
  every :class:`~mfsearch.models.mobile_former.ConvBN` output (conv + BatchNorm), flattened per
  example; ``K = sum_layers c c^T + (1 - c)(1 - c)^T`` and the score is ``log |det K|``. The
  code is the pre-activation sign, i.e. the ReLU code, also where the block applies DY-ReLU,
  h-swish or ReLU6 next (and for the ConvBNs that feed no activation at all). No gradients,
  train-mode BatchNorm (batch statistics) as in the paper.
* ``params`` and ``macs``: the plain baselines, the exact parameter count and the analytic MACs
  of :func:`mfsearch.models.complexity` at the batch's input size.

Conventions shared by all proxies:

* The model is built freshly from ``cfg`` with the CPU generator seeded to ``seed`` (the same
  weights as ``torch.manual_seed(seed); MobileFormer(cfg)``), then moved to ``x``'s device. The
  caller's global RNG state is saved and restored, and no accelerator generator is touched.
* ``grad_norm``, ``snip``, ``jacob_cov`` and ``naswot`` run the model in train mode but with
  dropout off, so a score is a deterministic function of ``(cfg, x, y, seed)``; the batch must
  hold at least two examples (train-mode BatchNorm1d in the head).
* Unlike the reference code of Abdelfattah et al., which restricts ``synflow``, ``grad_norm`` and
  ``snip`` to convolution and linear weights, the sums run over every parameter tensor,
  including norm-layer affine parameters and the token table (a learned part of the model).
* A singular NASWOT kernel (two examples with the same code in every layer) has
  ``log det K = -inf``, which is returned as is; every other score is finite.

On Mobile-Former, ``synflow`` is dominated by the head: under all-positive weights and an
all-ones input the pre-activations are large, so the ReLU6 after the stem, the lite block and
the head's 1x1 conv saturate and pass no gradient, and the LayerNorms of the token path
renormalise the signal. The score then mostly grows with the head's width.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models import MobileFormer, MobileFormerConfig, complexity
from ..models.mobile_former import ConvBN
from .settings import Evaluation
from .train import proxy_data

#: the proxies that score an architecture (objectives of a zero-cost search; mfsearch.objectives registers them)
SCORES: tuple[str, ...] = ("synflow", "grad_norm", "snip", "jacob_cov", "naswot")
#: the plain baselines every proxy is compared with
BASELINES: tuple[str, ...] = ("params", "macs")
PROXIES: tuple[str, ...] = SCORES + BASELINES

DESCRIPTIONS: dict[str, str] = {
    "synflow": "data-free synaptic flow sum|theta*dR/dtheta|, |theta| net on an all-ones input (Tanaka et al. 2020)",
    "grad_norm": "sum of gradient L2 norms of the cross-entropy at init (Abdelfattah et al. 2021, zero-cost proxies)",
    "snip": "SNIP saliency sum|theta*dL/dtheta| of the cross-entropy (Lee et al. 2019; Abdelfattah et al. 2021)",
    "jacob_cov": "input-Jacobian correlation score, NASWOT v1 (Mellor et al. 2021)",
    "naswot": "log-determinant of the binary activation-code kernel, NASWOT v2 (Mellor et al. 2021)",
    "params": "baseline: exact number of parameters",
    "macs": "baseline: analytic multiply-accumulates at the batch's input size",
}

_JACOB_EPS = 1e-5
_GROUPS: dict[str, str] = {  # proxies that share one computation on one fresh model
    "grad_norm": "ce_grads",
    "snip": "ce_grads",
    "synflow": "synflow",
    "jacob_cov": "jacob_cov",
    "naswot": "naswot",
}


# ---------------------------------------------------------------------------- model and batch


@contextmanager
def _preserved_rng() -> Iterator[None]:
    """Restore the CPU generator's state on exit (the only generator model building uses)."""
    state = torch.get_rng_state()
    try:
        yield
    finally:
        torch.set_rng_state(state)


def init_model(cfg: MobileFormerConfig, seed: int = 0, device: torch.device | str | None = None) -> MobileFormer:
    """``MobileFormer(cfg)`` initialised from the CPU generator seeded with ``seed``.

    The weights equal those of ``torch.manual_seed(seed); MobileFormer(cfg)``; the caller's
    RNG state is left as it was and accelerator generators are not touched.
    """
    with _preserved_rng():
        torch.default_generator.manual_seed(int(seed))
        model = MobileFormer(cfg)
    return model if device is None else model.to(device)


def _check_names(names: Iterable[str]) -> list[str]:
    out = []
    for name in names:
        if name not in PROXIES:
            raise ValueError(f"unknown zero-cost proxy {name!r}; valid names: {', '.join(PROXIES)}")
        if name not in out:
            out.append(name)
    return out


def _check_batch(cfg: MobileFormerConfig, x: Tensor, y: Tensor) -> None:
    if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
        raise ValueError(f"x must be a float tensor of images N x 3 x H x W, got {getattr(x, 'shape', type(x))}")
    if x.shape[0] < 2:
        raise ValueError("the batch needs at least 2 examples (train-mode BatchNorm)")
    if not isinstance(y, Tensor) or y.shape != (x.shape[0],) or y.dtype != torch.int64:
        raise ValueError(f"y must be int64 labels of shape ({x.shape[0]},), got {getattr(y, 'dtype', type(y))} "
                         f"{tuple(getattr(y, 'shape', ()))}")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= cfg.num_classes:
        raise ValueError(f"labels must lie in [0, {cfg.num_classes}), got min {lo} max {hi}")


def _train_no_dropout(model: nn.Module) -> nn.Module:
    """Train mode (batch-statistics BatchNorm) with dropout switched off."""
    model.train()
    for mod in model.modules():
        if isinstance(mod, nn.modules.dropout._DropoutNd):
            mod.eval()
    return model


# ---------------------------------------------------------------------------- the proxies


def _synflow(model: nn.Module, x: Tensor) -> float:
    model = model.double().eval()
    params = [p for p in model.parameters() if p.requires_grad]
    with torch.no_grad():
        for p in params:
            p.abs_()
    ones = torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device)
    with torch.enable_grad():
        r = model(ones).sum()
        grads = torch.autograd.grad(r, params, allow_unused=True)
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for p, g in zip(params, grads):
        if g is not None:
            total += (p.detach() * g).abs().sum()
    return float(total)


def _ce_grads(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, float]:
    _train_no_dropout(model)
    params = [p for p in model.parameters() if p.requires_grad]
    with torch.enable_grad():
        loss = F.cross_entropy(model(x), y)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    norm = torch.zeros((), dtype=torch.float64, device=x.device)
    snip = torch.zeros((), dtype=torch.float64, device=x.device)
    for p, g in zip(params, grads):
        if g is not None:
            norm += g.double().norm()
            snip += (p.detach().double() * g.double()).abs().sum()
    return {"grad_norm": float(norm), "snip": float(snip)}


def _jacob_cov(model: nn.Module, x: Tensor) -> float:
    _train_no_dropout(model)
    inp = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (jac,) = torch.autograd.grad(model(inp).sum(), inp)
    j = jac.reshape(jac.shape[0], -1).double()
    j = j - j.mean(dim=1, keepdim=True)
    j = j / j.norm(dim=1, keepdim=True).clamp_min(1e-30)  # a constant row correlates with nothing
    corr = j @ j.T
    v = torch.linalg.eigvalsh(corr).clamp_min(0.0) + _JACOB_EPS
    return float(-(v.log() + v.reciprocal()).sum())


def _naswot(model: nn.Module, x: Tensor) -> float:
    _train_no_dropout(model)
    n = x.shape[0]
    k = torch.zeros((n, n), dtype=torch.float64, device=x.device)

    def hook(_mod: nn.Module, _inp: tuple, out: Tensor) -> None:
        c = (out.detach() > 0).reshape(n, -1)
        d = c.shape[1]
        # exact in float32 while every count stays below 2**24
        cf = c.to(torch.float32 if d < 2**24 else torch.float64)
        s = cf.sum(dim=1).double()
        # c c^T + (1 - c)(1 - c)^T = 2 c c^T - s 1^T - 1 s^T + d
        k.add_(2.0 * (cf @ cf.T).double() - s[:, None] - s[None, :] + d)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, ConvBN)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    if int(torch.linalg.matrix_rank(k)) < n:
        return -math.inf
    return float(torch.linalg.slogdet(k).logabsdet)


# ---------------------------------------------------------------------------- public API


def scores(
    cfg: MobileFormerConfig, x: Tensor, y: Tensor, names: Iterable[str] = PROXIES, *, seed: int = 0
) -> dict[str, float]:
    """Several proxies at once, each on a freshly initialised model (same ``seed``).

    The model is built once and copied for every computation that changes it; ``grad_norm`` and
    ``snip`` share one backward pass. The result equals calling :func:`score` name by name.
    """
    if isinstance(names, str):
        names = (names,)
    wanted = _check_names(names)
    _check_batch(cfg, x, y)
    x = x.detach().to(torch.float32)
    y = y.detach()
    out: dict[str, float] = {}
    if "params" in wanted or "macs" in wanted:
        cx = complexity(cfg, input_size=int(x.shape[-1]))
        out["params"], out["macs"] = float(cx.params), float(cx.macs)
    groups = list(dict.fromkeys(_GROUPS[n] for n in wanted if n in _GROUPS))
    if groups:
        base = init_model(cfg, seed, x.device)
        for i, group in enumerate(groups):
            model = base if i == len(groups) - 1 else copy.deepcopy(base)
            if group == "synflow":
                out["synflow"] = _synflow(model, x)
            elif group == "ce_grads":
                out.update(_ce_grads(model, x, y))
            elif group == "jacob_cov":
                out["jacob_cov"] = _jacob_cov(model, x)
            else:
                out["naswot"] = _naswot(model, x)
    return {n: out[n] for n in wanted}


def score(name: str, cfg: MobileFormerConfig, x: Tensor, y: Tensor, *, seed: int = 0) -> float:
    """The proxy ``name`` (one of :data:`PROXIES`) of ``cfg`` on the batch ``(x, y)``; higher is better.

    ``x`` are float images ``N x 3 x H x W`` (``N >= 2``), ``y`` int64 labels below
    ``cfg.num_classes``. Deterministic for a given ``(cfg, x, y, seed)``; the caller's tensors,
    gradients and global RNG state are left untouched.
    """
    if not isinstance(name, str):
        raise ValueError(f"unknown zero-cost proxy {name!r}; valid names: {', '.join(PROXIES)}")
    return scores(cfg, x, y, (name,), seed=seed)[name]


def batch_from(ev: Evaluation, batch_size: int = 64) -> tuple[Tensor, Tensor, int]:
    """The first ``batch_size`` training examples of ``ev`` (epoch 0 order), and the class count.

    Uses the cached loaders of :func:`mfsearch.evaluation.train.proxy_data` (so the same
    preprocessing, subset, permutation and augmentation as proxy training) and leaves the
    loader's epoch as it found it.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    data = proxy_data(ev)
    loader = data.train
    saved_epoch = loader.epoch
    xs: list[Tensor] = []
    ys: list[Tensor] = []
    have = 0
    loader.set_epoch(0)
    try:
        for xb, yb in loader:
            xs.append(xb)
            ys.append(yb)
            have += xb.shape[0]
            if have >= batch_size:
                break
    finally:
        loader.set_epoch(saved_epoch)
    if have < batch_size:
        raise ValueError(f"the training set of this evaluation yields only {have} examples per epoch, "
                         f"fewer than batch_size={batch_size}")
    return torch.cat(xs)[:batch_size], torch.cat(ys)[:batch_size], data.num_classes
