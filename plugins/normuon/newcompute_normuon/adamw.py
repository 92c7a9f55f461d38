"""AdamW for the parameters NorMuon does not train (embeddings, head, norms, biases, scalars).

On CUDA a group is one launch of torch's fused AdamW kernel (the arithmetic
of ``torch.optim.AdamW(fused=True)``, which the core's default optimizer
uses there): it reads and writes each tensor once, where the ``_foreach``
sequence below makes eight passes, about 1.3 ms a step on the 75M-element
embedding of the benchmark set. Elsewhere ``torch._foreach_*`` ops keep it
arithmetically identical to ``torch.optim.AdamW`` (decoupled decay
``p·(1 − lr·wd)``, bias-corrected moments), so runs compare with the core's
default optimizer on either device. State per parameter:
``exp_avg``, ``exp_avg_sq`` (the parameter's shape and sharding) and an
integer ``step``.
"""

from __future__ import annotations

import math
from collections.abc import MutableMapping
from typing import Any

import torch

from newcompute_normuon.topology import local


def _fusable(values: list[torch.Tensor], grads: list[torch.Tensor]) -> bool:
    """The fused kernel takes one CUDA device and one floating dtype per launch."""
    first = values[0]
    return first.is_cuda and all(
        t.device == first.device and t.dtype == first.dtype and t.dtype.is_floating_point for t in (*values, *grads)
    )


def adamw_group(params: list[torch.Tensor], group: dict[str, Any], state: MutableMapping[torch.Tensor, dict]) -> None:
    """One AdamW step for the parameters of ``group`` that have gradients."""
    if not params:
        return
    lr, (beta1, beta2), eps, decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
    values = [local(p) for p in params]
    grads = [local(p.grad) for p in params]
    exp_avgs = [local(state[p]["exp_avg"]) for p in params]
    exp_avg_sqs = [local(state[p]["exp_avg_sq"]) for p in params]
    for p in params:
        state[p]["step"] += 1
    steps = [state[p]["step"] for p in params]
    if _fusable(values, grads):
        step_tensors = [torch.full((), float(s), dtype=torch.float32, device=v.device) for v, s in zip(values, steps)]
        torch._fused_adamw_(
            values, grads, exp_avgs, exp_avg_sqs, [], step_tensors,
            lr=lr, beta1=beta1, beta2=beta2, weight_decay=decay, eps=eps,
            amsgrad=False, maximize=False, grad_scale=None, found_inf=None,
        )  # fmt: skip
        return
    if decay:
        torch._foreach_mul_(values, 1.0 - lr * decay)
    torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1.0 - beta2)
    denominators = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denominators, [math.sqrt(1.0 - beta2**s) for s in steps])
    torch._foreach_add_(denominators, eps)
    torch._foreach_addcdiv_(values, exp_avgs, denominators, [-lr / (1.0 - beta1**s) for s in steps])
