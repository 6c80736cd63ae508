import copy
import io
import math

import pytest
import torch
from torch import nn

from minibert import optim
from minibert.optim import AdamW, LossScaler, make_schedule, param_groups


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # The tensors here are tiny: a second intra-op thread buys nothing, and on a busy machine every
    # parallel region waits for it (seconds per test instead of milliseconds).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


CUDA = pytest.param(
    "cuda",
    marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")],
)


class TinyNet(nn.Module):
    """Embedding + LayerNorm + two Linears + LayerNorm, a decoder tied to the embedding, and a
    `late` layer that only joins the loss from step 5 on (so its step count lags the others)."""

    def __init__(self, vocab: int = 20, dim: int = 8) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.ln_in = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, 2 * dim)
        self.down = nn.Linear(2 * dim, dim)
        self.late = nn.Linear(dim, dim)
        self.ln_out = nn.LayerNorm(dim)
        self.decoder = nn.Linear(dim, vocab)
        self.decoder.weight = self.tok.weight

    def forward(self, ids: torch.Tensor, step: int) -> torch.Tensor:
        h = self.ln_in(self.tok(ids))
        h = h + self.down(torch.tanh(self.up(h)))
        if step >= 5:
            h = h + self.late(h)
        return self.decoder(self.ln_out(h))  # (B, T, vocab)


def batch(step: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    # Seeded by step, so a resumed run sees the same batches as an uninterrupted one.
    g = torch.Generator().manual_seed(1000 + step)
    ids = torch.randint(0, 20, (4, 6), generator=g)
    return ids.to(device), torch.roll(ids, 1, dims=1).to(device)


def train(model: TinyNet, opt: torch.optim.Optimizer, steps: range, device: str, sched=None) -> None:
    for step in steps:
        ids, labels = batch(step, device)
        loss = nn.functional.cross_entropy(model(ids, step).flatten(0, 1), labels.flatten())
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        opt.zero_grad()


def tiny_net(device: str, seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet().to(device)


HYPER = dict(lr=3e-2, betas=(0.8, 0.95), eps=1e-6)


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("grouped", [False, True], ids=["one-group", "decay-groups"])
def test_adamw_matches_torch(device: str, foreach: bool, grouped: bool) -> None:
    ours, ref = tiny_net(device), tiny_net(device)
    if grouped:
        opt = AdamW(param_groups(ours, 0.1), **HYPER, foreach=foreach)
        ref_opt = torch.optim.AdamW(param_groups(ref, 0.1), **HYPER, foreach=foreach)
    else:
        opt = AdamW(ours.parameters(), **HYPER, weight_decay=0.01, foreach=foreach)
        ref_opt = torch.optim.AdamW(ref.parameters(), **HYPER, weight_decay=0.01, foreach=foreach)
    start = copy.deepcopy(ours.state_dict())

    train(ours, opt, range(20), device)
    train(ref, ref_opt, range(20), device)

    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        assert not torch.equal(p, start[name]), f"{name} never moved: the test would prove nothing"
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=lambda m: f"{name}: {m}")
    assert opt.state[ours.up.weight]["step"] == 20
    assert opt.state[ours.late.weight]["step"] == 15  # no gradient in steps 0-4: skipped, not counted


def test_adamw_paths_agree_bitwise() -> None:
    a, b = tiny_net("cpu"), tiny_net("cpu")
    train(a, AdamW(a.parameters(), **HYPER, foreach=True), range(10), "cpu")
    train(b, AdamW(b.parameters(), **HYPER, foreach=False), range(10), "cpu")
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_chunked_update_matches_torch(monkeypatch) -> None:
    # Chunks of 7 elements: every tensor of the net spans several chunks and most end in a short
    # one; a transposed (strided) parameter takes the one-piece path.
    monkeypatch.setattr(optim, "CHUNK", 7)
    ours, ref = tiny_net("cpu"), tiny_net("cpu")
    for net in (ours, ref):
        net.up.weight = nn.Parameter(net.up.weight.detach().t().contiguous().t())
    assert not ours.up.weight.is_contiguous()
    opt = AdamW(param_groups(ours, 0.1), **HYPER)
    ref_opt = torch.optim.AdamW(param_groups(ref, 0.1), **HYPER, foreach=False)
    assert opt.param_groups[0]["foreach"] is None  # the default: chunks on the CPU
    train(ours, opt, range(10), "cpu")
    train(ref, ref_opt, range(10), "cpu")
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        assert p.numel() > 7, name
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=lambda m: f"{name}: {m}")


def to_bytes(obj) -> io.BytesIO:
    # Through torch.save, as a checkpoint goes: state_dict() returns live tensors, not copies.
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


@pytest.mark.parametrize("foreach", [True, False])
def test_resume_is_bit_identical(foreach: bool) -> None:
    def setup(seed: int):
        model = tiny_net("cpu", seed)
        opt = AdamW(param_groups(model, 0.05), **HYPER, foreach=foreach)
        return model, opt, make_schedule("linear", opt, total_steps=10, warmup=3)

    model, opt, sched = setup(seed=0)
    train(model, opt, range(5), "cpu", sched)
    checkpoint = to_bytes({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()})
    train(model, opt, range(5, 10), "cpu", sched)

    resumed, resumed_opt, resumed_sched = setup(seed=1)  # different init: everything must come from the file
    state = torch.load(checkpoint, weights_only=True)
    resumed.load_state_dict(state["model"])
    resumed_opt.load_state_dict(state["opt"])
    resumed_sched.load_state_dict(state["sched"])
    assert resumed_opt.state[resumed.up.weight]["step"] == 5
    train(resumed, resumed_opt, range(5, 10), "cpu", resumed_sched)

    for (name, p), q in zip(model.named_parameters(), resumed.parameters()):
        assert torch.equal(p, q), name
    assert resumed_opt.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_param_groups_split_biases_and_layernorms() -> None:
    model = TinyNet()
    decay, no_decay = param_groups(model, weight_decay=0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0

    biases = [model.up.bias, model.down.bias, model.late.bias, model.decoder.bias]
    layer_norms = [model.ln_in.weight, model.ln_in.bias, model.ln_out.weight, model.ln_out.bias]
    matrices = [model.tok.weight, model.up.weight, model.down.weight, model.late.weight]
    assert {id(p) for p in no_decay["params"]} == {id(p) for p in biases + layer_norms}
    assert {id(p) for p in decay["params"]} == {id(p) for p in matrices}
    # The tied decoder weight is the embedding, listed once; nothing is lost or duplicated.
    everything = decay["params"] + no_decay["params"]
    assert len(everything) == len({id(p) for p in everything}) == len(list(model.parameters()))


def test_param_groups_leave_out_frozen_parameters() -> None:
    model = TinyNet()
    model.ln_in.requires_grad_(False)
    decay, no_decay = param_groups(model, weight_decay=0.1)
    kept = {id(p) for p in decay["params"] + no_decay["params"]}
    assert id(model.ln_in.weight) not in kept and id(model.ln_in.bias) not in kept
    assert len(no_decay["params"]) == 6


def lr_curve(name: str, warmup: float | int, total: int = 100, base: float = 2.0) -> list[float]:
    """The learning rate used at optimizer step k, for k = 0..total, as the trainer would see it."""
    p = nn.Parameter(torch.zeros(1))
    opt = AdamW([p], lr=base)
    sched = make_schedule(name, opt, total_steps=total, warmup=warmup)
    lrs = []
    for _ in range(total + 1):
        lrs.append(opt.param_groups[0]["lr"] / base)
        opt.step()  # p has no grad: a no-op, but LambdaLR expects it before its own step
        sched.step()
    return lrs


@pytest.mark.parametrize(
    "name, middle, end", [("linear", 0.5, 0.0), ("cosine", 0.5, 0.0), ("constant", 1.0, 1.0)]
)
def test_schedules(name: str, middle: float, end: float) -> None:
    lrs = lr_curve(name, warmup=10)
    assert lrs[0] == 0.0
    assert lrs[5] == pytest.approx(0.5)  # halfway through warm-up
    assert lrs[10] == pytest.approx(1.0)  # end of warm-up
    assert lrs[55] == pytest.approx(middle)  # halfway from warm-up to the end
    assert lrs[100] == pytest.approx(end, abs=1e-12)
    assert lr_curve(name, warmup=0.1) == lrs  # a ratio of 0.1 is the same 10 steps


def test_schedule_shapes_between_points() -> None:
    assert lr_curve("linear", warmup=0)[0] == 1.0  # no warm-up: full rate from the first step
    # A quarter of the way from the end of warm-up (step 10) to the end (step 110).
    assert lr_curve("linear", warmup=10, total=110)[35] == pytest.approx(0.75)
    assert lr_curve("cosine", warmup=10, total=110)[35] == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    # Fractional warm-up steps round up: 0.05 * 30 = 1.5 -> 2 steps; 0.07 * 100 is 7 despite float noise.
    assert lr_curve("linear", warmup=0.05, total=30)[:3] == [0.0, 0.5, 1.0]
    assert lr_curve("constant", warmup=0.07)[6:8] == [pytest.approx(6 / 7), 1.0]


@pytest.mark.parametrize(
    "name, warmup, bad",
    [("step", 10, "'step'"), ("linear", -1, "-1"), ("linear", 101, "101"), ("linear", 1.5, "1.5")],
)
def test_schedule_errors_name_the_bad_value(name: str, warmup: float, bad: str) -> None:
    opt = AdamW([nn.Parameter(torch.zeros(1))])
    with pytest.raises(ValueError, match=bad):
        make_schedule(name, opt, total_steps=100, warmup=warmup)


@pytest.mark.parametrize(
    "kwargs, bad",
    [(dict(lr=-1.0), "-1.0"), (dict(betas=(0.9, 1.0)), "1.0"), (dict(eps=-1e-8), "-1e-08"),
     (dict(weight_decay=-0.1), "-0.1")],
)
def test_adamw_errors_name_the_bad_value(kwargs: dict, bad: str) -> None:
    with pytest.raises(ValueError, match=bad):
        AdamW([nn.Parameter(torch.zeros(1))], **kwargs)


def scaled_step(model: TinyNet, opt: AdamW, scaler: LossScaler, poison: float | None = None) -> bool:
    """One trainer step in the documented pattern; `poison` is written into one gradient."""
    ids, labels = batch(0, "cpu")
    loss = nn.functional.cross_entropy(model(ids, 0).flatten(0, 1), labels.flatten())
    scaler.scale(loss).backward()
    if poison is not None:
        model.up.weight.grad[0, 0] = poison
    found_inf = scaler.unscale_(opt)
    if not found_inf:
        opt.step()
    scaler.update(found_inf)
    opt.zero_grad()
    return found_inf


@pytest.mark.parametrize("poison", [math.inf, math.nan])
def test_loss_scaler_skips_step_on_overflow(poison: float) -> None:
    model = tiny_net("cpu")
    opt = AdamW(model.parameters(), lr=1e-2)
    scaler = LossScaler(init_scale=2.0**10)
    before = copy.deepcopy(model.state_dict())

    assert scaled_step(model, opt, scaler, poison=poison) is True
    for name, p in model.state_dict().items():
        assert torch.equal(p, before[name]), name
    assert not opt.state  # the optimizer never ran
    assert scaler.loss_scale == 2.0**9

    assert scaled_step(model, opt, scaler) is False
    assert not torch.equal(model.up.weight, before["up.weight"])


def test_loss_scaler_grows_after_interval_of_good_steps() -> None:
    model = tiny_net("cpu")
    opt = AdamW(model.parameters(), lr=1e-3)
    scaler = LossScaler(init_scale=8.0, growth_interval=3)
    for _ in range(2):
        scaled_step(model, opt, scaler)
    assert scaler.loss_scale == 8.0
    scaled_step(model, opt, scaler, poison=math.inf)  # an overflow restarts the count
    assert (scaler.loss_scale, scaler.good_steps) == (4.0, 0)
    for _ in range(2):
        scaled_step(model, opt, scaler)
    assert scaler.loss_scale == 4.0
    scaled_step(model, opt, scaler)
    assert (scaler.loss_scale, scaler.good_steps) == (8.0, 0)


def test_loss_scaler_unscale_divides_exactly() -> None:
    params = [nn.Parameter(torch.zeros(5, 3)), nn.Parameter(torch.zeros(7)), nn.Parameter(torch.zeros(2))]
    opt = AdamW(params)
    scaler = LossScaler()
    true_grads = [torch.randn_like(p) for p in params[:2]]
    for p, g in zip(params, true_grads):
        p.grad = g * scaler.loss_scale
    assert scaler.unscale_(opt) is False  # params[2] has no grad: skipped, not an error
    for p, g in zip(params, true_grads):
        assert torch.equal(p.grad, g)
    assert scaler.scale(torch.tensor(3.0)).item() == 3.0 * 2.0**16


def test_loss_scaler_state_dict_round_trip() -> None:
    scaler = LossScaler(init_scale=2.0**12, growth_interval=4)
    for found_inf in [True, False, False]:
        scaler.update(found_inf)
    restored = LossScaler(growth_interval=4)
    restored.load_state_dict(torch.load(to_bytes(scaler.state_dict()), weights_only=True))
    assert (restored.loss_scale, restored.good_steps) == (2.0**11, 2)
    for found_inf in [False, False, True, False]:
        scaler.update(found_inf)
        restored.update(found_inf)
        assert (restored.loss_scale, restored.good_steps) == (scaler.loss_scale, scaler.good_steps)


def test_loss_scaler_disabled_is_a_no_op() -> None:
    model = tiny_net("cpu")
    opt = AdamW(model.parameters())
    scaler = LossScaler(enabled=False)
    loss = torch.tensor(2.5)
    assert scaler.scale(loss) is loss
    model.up.weight.grad = torch.full_like(model.up.weight, math.inf)
    assert scaler.unscale_(opt) is False  # it does not even look at the gradients
    assert torch.isinf(model.up.weight.grad).all()
    scaler.update(True)
    assert scaler.loss_scale == 1.0 and scaler.state_dict() == {}


@pytest.mark.parametrize(
    "kwargs, bad",
    [(dict(init_scale=0.0), "0.0"), (dict(growth_factor=1.0), "1.0"), (dict(backoff_factor=1.5), "1.5"),
     (dict(growth_interval=0), "0")],
)
def test_loss_scaler_errors_name_the_bad_value(kwargs: dict, bad: str) -> None:
    with pytest.raises(ValueError, match=bad):
        LossScaler(**kwargs)
