"""Everything between a gradient and a parameter update: AdamW, its parameter groups, learning-rate
schedules and fp16 loss scaling.

Torch supplies tensors and kernels; the update rules are written out here so a reader can check
every line against the papers (Adam: Kingma & Ba 2014; decoupled weight decay: Loshchilov & Hutter 2017).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch


class AdamW(torch.optim.Optimizer):
    """Adam with decoupled weight decay, computing exactly what `torch.optim.AdamW` computes.

    Per parameter p with gradient g, at its step t (1, 2, ...):
        p <- p * (1 - lr * weight_decay)             decay first, outside the adaptive update
        m <- beta1 * m + (1 - beta1) * g             first moment
        v <- beta2 * v + (1 - beta2) * g * g         second moment
        p <- p - lr / (1 - beta1^t) * m / (sqrt(v / (1 - beta2^t)) + eps)

    `foreach=True` runs each line as one multi-tensor kernel over all parameters of a group: few
    kernel launches, the right choice on a GPU. `foreach=False` runs the same lines per tensor, one
    cache-sized chunk at a time, so each element of a parameter, its gradient and both moments
    comes from memory once per step instead of once per line: on a CPU the update is bound by
    memory traffic, not arithmetic. `None` (the default) picks chunks when the first parameter
    lives on the CPU. Both paths give the same numbers.
    Parameters whose `.grad` is None are skipped and their step count does not advance.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        foreach: bool | None = None,
    ) -> None:
        if not lr >= 0.0:
            raise ValueError(f"lr {lr} is negative; use a learning rate >= 0")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"betas {betas} must both lie in [0, 1), e.g. (0.9, 0.999)")
        if not eps >= 0.0:
            raise ValueError(f"eps {eps} is negative; use a small positive value such as 1e-8")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay {weight_decay} is negative; use 0 to turn decay off")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, foreach=foreach)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    # The step count is a Python int per parameter: it round-trips through
                    # state_dict unchanged, needs no device sync to read, and stays exact
                    # (a float32 counter stops counting at 2^24).
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                params.append(p)
                grads.append(p.grad)
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
                steps.append(state["step"])
            if not params:
                continue
            foreach = group["foreach"] if group["foreach"] is not None else params[0].device.type != "cpu"
            update = _adamw_foreach if foreach else _adamw_per_tensor
            beta1, beta2 = group["betas"]
            update(params, grads, exp_avgs, exp_avg_sqs, steps, lr=group["lr"], beta1=beta1,
                   beta2=beta2, eps=group["eps"], weight_decay=group["weight_decay"])
        return loss


# Elements per chunk of the per-tensor path: 256k fp32 values are 1 MiB for each of parameter,
# gradient, two moments and the scratch denominator, which stay in cache across the chunk's lines.
CHUNK = 1 << 18


def _adamw_per_tensor(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    steps: list[int],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
) -> None:
    scratch = torch.empty(0)
    for p, g, m, v, t in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
        # Both moments start at zero, so early on they are biased towards it by (1 - beta^t).
        step_size = -lr / (1 - beta1**t)
        bias_correction2_sqrt = (1 - beta2**t) ** 0.5
        tensors = (p, g, m, v)
        if all(x.is_contiguous() for x in tensors):
            flat = [x.view(-1) for x in tensors]
            chunks = [[x[i:i + CHUNK] for x in flat] for i in range(0, p.numel(), CHUNK)]
        else:  # a strided layout has no flat view to slice: update the tensor in one piece
            chunks = [tensors]
        n = max(c[0].numel() for c in chunks)
        if scratch.numel() < n or scratch.dtype != p.dtype or scratch.device != p.device:
            scratch = torch.empty(n, dtype=p.dtype, device=p.device)
        for pc, gc, mc, vc in chunks:
            if weight_decay != 0:
                pc.mul_(1 - lr * weight_decay)
            mc.lerp_(gc, 1 - beta1)  # m + (1 - beta1) * (g - m) == beta1 * m + (1 - beta1) * g
            vc.mul_(beta2).addcmul_(gc, gc, value=1 - beta2)
            denom = torch.sqrt(vc, out=scratch[:vc.numel()].view(vc.shape))
            denom.div_(bias_correction2_sqrt).add_(eps)
            pc.addcdiv_(mc, denom, value=step_size)


def _adamw_foreach(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    steps: list[int],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
) -> None:
    # The same lines as `_adamw_per_tensor`, each one kernel launch for the whole list instead of one
    # per tensor. Lists that span devices or dtypes still give correct results: the foreach ops then
    # fall back to a loop inside torch.
    if weight_decay != 0:
        torch._foreach_mul_(params, 1 - lr * weight_decay)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
    # Step counts differ between parameters that started receiving gradients at different times,
    # so the bias corrections are per tensor.
    step_sizes = [-lr / (1 - beta1**t) for t in steps]
    bias_correction2_sqrts = [(1 - beta2**t) ** 0.5 for t in steps]
    denoms = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denoms, bias_correction2_sqrts)
    torch._foreach_add_(denoms, eps)
    torch._foreach_addcdiv_(params, exp_avgs, denoms, step_sizes)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Split the trainable parameters into [decay, no-decay] groups for AdamW.

    Weight decay pulls weights towards zero. That regularises weight matrices and embeddings, but
    a bias or a LayerNorm gain pulled towards zero only shifts or shrinks activations, so those
    are left undecayed (as in the original BERT). LayerNorms are found by module type, so any
    attribute naming works; biases are parameters whose own name ends in "bias"; a module that sets
    `no_weight_decay = True` (a CRF's transition scores, biases of tag pairs) keeps all its own. A parameter
    shared by several modules (tied embeddings) is listed once; frozen parameters are left out.
    """
    if not weight_decay >= 0.0:
        raise ValueError(f"weight_decay {weight_decay} is negative; use 0 to turn decay off")
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            if isinstance(module, torch.nn.LayerNorm) or name.endswith("bias") \
                    or getattr(module, "no_weight_decay", False):
                no_decay.append(p)
            else:
                decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


SCHEDULES = ("linear", "cosine", "constant")


def make_schedule(
    name: str, optimizer: torch.optim.Optimizer, total_steps: int, warmup: float | int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A learning-rate multiplier per optimizer step: linear warm-up from 0 to 1, then
    "linear" decays to 0 at `total_steps`, "cosine" follows half a cosine down to 0,
    "constant" stays at 1. The multiplier is 0 at step 0 unless there is no warm-up.

    `warmup` below 1 is a fraction of `total_steps` (rounded up); 1 or more is a step count.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; use one of {SCHEDULES}")
    if total_steps < 1:
        raise ValueError(f"total_steps {total_steps} must be at least 1")
    if warmup < 0:
        raise ValueError(f"warmup {warmup} is negative; use a fraction in [0, 1) or a step count")
    if warmup < 1:
        # round() first, so float noise (0.07 * 100 == 7.000000000000001) does not add a step.
        warmup_steps = math.ceil(round(warmup * total_steps, 6))
    elif float(warmup).is_integer():
        warmup_steps = int(warmup)
    else:
        raise ValueError(f"warmup {warmup} is neither a fraction in [0, 1) nor a whole number of steps")
    if warmup_steps > total_steps:
        raise ValueError(f"warmup {warmup} exceeds total_steps {total_steps}; shorten the warm-up")

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return step / warmup_steps
        if name == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        if name == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)


class LossScaler:
    """Dynamic loss scaling for fp16 training.

    fp16 gradients underflow to zero below ~6e-8, so the loss is multiplied by a large `scale`
    before backward and the gradients divided by it before the optimizer step. When a gradient
    overflows to inf/nan instead, the step is skipped and the scale backed off; after
    `growth_interval` clean steps in a row the scale grows again, to stay as high as it safely can.

    Usage:
        scaler.scale(loss).backward()
        found_inf = scaler.unscale_(optimizer)
        if not found_inf:
            clip the gradients; optimizer.step()
        scaler.update(found_inf)

    Disabled (bf16 or fp32 training) every method is a no-op and `unscale_` never syncs.
    """

    def __init__(
        self,
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
        enabled: bool = True,
    ) -> None:
        if not init_scale > 0:
            raise ValueError(f"init_scale {init_scale} must be positive, e.g. 2.**16")
        if not growth_factor > 1:
            raise ValueError(f"growth_factor {growth_factor} must be above 1, e.g. 2.0")
        if not 0 < backoff_factor < 1:
            raise ValueError(f"backoff_factor {backoff_factor} must lie in (0, 1), e.g. 0.5")
        if growth_interval < 1:
            raise ValueError(f"growth_interval {growth_interval} must be at least 1 step")
        self.enabled = enabled
        self.growth_factor = growth_factor
        self.backoff_factor = backoff_factor
        self.growth_interval = growth_interval
        # A Python float, not a tensor: `scale(loss)` then needs no device sync, and powers of two
        # keep the multiply and the later divide exact.
        self.loss_scale = float(init_scale) if enabled else 1.0
        self.good_steps = 0  # clean steps since the last growth or backoff

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self.loss_scale if self.enabled else loss

    def unscale_(self, optimizer: torch.optim.Optimizer) -> bool:
        """Divide every gradient by the scale in place; return True if any was inf or nan."""
        if not self.enabled:
            return False
        grads_by_device: dict[torch.device, list[torch.Tensor]] = {}
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    grads_by_device.setdefault(p.grad.device, []).append(p.grad)
        found_infs = []
        for device, grads in grads_by_device.items():
            found_inf = torch.zeros((), device=device)
            inv_scale = torch.full((), 1.0 / self.loss_scale, device=device)
            # One fused pass per device: grads *= inv_scale, and found_inf = 1 if any element is
            # inf or nan. Checking here keeps it to one device sync per step (the .item() below).
            torch._amp_foreach_non_finite_check_and_unscale_(grads, found_inf, inv_scale)
            found_infs.append(found_inf)
        return any(f.item() > 0 for f in found_infs)

    def update(self, found_inf: bool) -> None:
        if not self.enabled:
            return
        if found_inf:
            self.loss_scale *= self.backoff_factor
            self.good_steps = 0
            return
        self.good_steps += 1
        if self.good_steps == self.growth_interval:
            self.loss_scale *= self.growth_factor
            self.good_steps = 0

    def state_dict(self) -> dict:
        return {"scale": self.loss_scale, "good_steps": self.good_steps} if self.enabled else {}

    def load_state_dict(self, state: dict) -> None:
        # A checkpoint from a run without fp16 carries no scale: start from init_scale, as a fresh run
        # would. A disabled scaler keeps its scale of 1 whatever the checkpoint says.
        if not self.enabled or not state:
            return
        self.loss_scale = float(state["scale"])
        self.good_steps = int(state["good_steps"])
