"""A compute budget, and the model size and tokens each scaling law spends it on.

``resolve_budget`` turns what the user knows (FLOPs; GPUs x days x MFU; dollars; a
fixed model size and/or token count) into one ``Budget``. ``allocate`` answers, under
each scaling law side by side, how many parameters and tokens that budget buys and the
loss the law predicts. Turning FLOPs into wall-clock time, GPU-hours and dollars on a
cluster is ``lmforge.plan.cost.pretraining_cost``.

Training compute is C = 6 N D (Kaplan et al. 2020, Sec. 2.1; Hoffmann et al. 2022,
Sec. 3.3). Cluster compute is n_gpus x peak dense bf16 FLOP/s x MFU x seconds, MFU as in
PaLM (Chowdhery et al. 2022, App. B). Prices are examples (``hardware.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from lmforge.errors import UserError, check_fraction, check_positive
from lmforge.plan.cost import hourly_price
from lmforge.plan.hardware import Cluster, get_gpu, parse_cluster
from lmforge.plan.laws import LAWS, MAX_FLOPS, ScalingLaw, get_law, loss_of
from lmforge.plan.units import parse_count

DEFAULT_GPU = "H100-SXM"
TOKENS_PER_PARAM = 20.0  # Hoffmann et al. 2022 rule of thumb (Chinchilla: 70B on 1.4T tokens)
CONSISTENCY = 0.01  # params x tokens must match a compute budget to within 1%
SECONDS_PER_DAY = 86400.0


@dataclass(frozen=True)
class Budget:
    """What a run may spend, resolved to FLOPs, with whatever the user fixed.

    ``fixed`` says which of the model size and token count the user set: "none", "params",
    "tokens" or "both". ``compute_given`` is False when the compute was not given but
    derived from a fixed size by the 20-tokens-per-parameter rule; ``allocate`` then lets
    each law pick its own optimum for that size.
    """

    flops: float
    source: str  # how the compute was obtained: "flops", "gpus x days", "dollars", ...
    fixed: str = "none"
    compute_given: bool = True
    n_params: float | None = None
    n_tokens: float | None = None
    gpu: str | None = None
    gpu_count: int | None = None
    days: float | None = None
    mfu: float = 0.4
    dollars: float | None = None
    price_per_hour: float | None = None  # user's price per GPU-hour; None = example price
    notes: tuple[str, ...] = ()

    @property
    def cluster(self) -> Cluster | None:
        """The cluster the budget names, if any."""
        if self.gpu is None:
            return None
        return Cluster(get_gpu(self.gpu), self.gpu_count or 1)

    def to_dict(self) -> dict:
        return {
            "flops": self.flops,
            "source": self.source,
            "fixed": self.fixed,
            "compute_given": self.compute_given,
            "n_params": self.n_params,
            "n_tokens": self.n_tokens,
            "gpu": self.gpu,
            "gpu_count": self.gpu_count,
            "days": self.days,
            "mfu": self.mfu,
            "dollars": self.dollars,
            "price_per_hour": self.price_per_hour,
            "notes": list(self.notes),
        }


def _count(name: str, value: float | str | None, upper: float) -> float | None:
    if value is None:
        return None
    return parse_count(value, name, upper=upper)


def _check_flops(flops: float, how: str) -> float:
    check_positive(f"compute from {how}", flops)
    if flops > MAX_FLOPS:
        raise UserError(f"compute from {how} is absurdly large", f"{flops:.3g} FLOP", f"keep it at most {MAX_FLOPS:g}")
    return flops


def resolve_budget(
    *,
    flops: float | str | None = None,
    gpus: str | None = None,
    days: float | None = None,
    mfu: float = 0.4,
    dollars: float | None = None,
    price_per_hour: float | None = None,
    params: float | str | None = None,
    tokens: float | str | None = None,
) -> Budget:
    """Resolve exactly one compute budget from what the user gave.

    Ways to give compute (exactly one, or none with a fixed size):

    - ``flops``: training FLOPs;
    - ``gpus`` + ``days`` (+ ``mfu``): n x peak bf16 FLOP/s x MFU x days x 86400;
    - ``dollars`` (+ ``gpus`` for the GPU kind, default H100-SXM, + ``price_per_hour``):
      GPU-hours = dollars / price, then FLOPs as above;
    - ``params`` and ``tokens`` both: C = 6 N D (Kaplan et al. 2020, Sec. 2.1).

    ``params`` with a compute budget gives D = C / (6 N); ``params`` alone gives
    D = 20 N by the rule of thumb of Hoffmann et al. (2022) (and ``tokens`` alone N = D / 20),
    noted in ``Budget.notes``. ``gpus`` without ``days`` only names the hardware when some
    other way fixes the compute. Conflicting budgets and missing pieces raise UserError.
    """
    check_fraction("MFU", mfu)
    if days is not None:
        check_positive("days", days, upper=36500)
    if dollars is not None:
        check_positive("dollars", dollars, upper=1e13)
    if price_per_hour is not None:
        check_positive("price per GPU-hour", price_per_hour, upper=1e4)
    flops_value = _count("compute (FLOPs)", flops, MAX_FLOPS)
    n_params = _count("parameters", params, 1e16)
    n_tokens = _count("training tokens", tokens, 1e18)
    cluster = parse_cluster(gpus) if gpus is not None else None

    if days is not None and cluster is None:
        raise UserError("a duration needs GPUs", days, "add the GPUs, e.g. --gpus 64xH100, or give --flops instead")
    sources = []
    if flops_value is not None:
        sources.append(("flops", f"{flops_value:.3g} FLOP"))
    if days is not None:
        sources.append(("gpus x days", f"{gpus} for {days:g} days"))
    if dollars is not None:
        sources.append(("dollars", f"${dollars:,.0f}"))
    if len(sources) > 1:
        (a, va), (b, vb) = sources[0], sources[1]
        raise UserError(
            f"conflicting compute budgets: {a} and {b}",
            f"{va} vs {vb}",
            "give only one of --flops, --gpus/--days, --dollars",
        )
    if cluster is not None and not sources and n_params is None and n_tokens is None:
        raise UserError(
            "the GPUs need a duration or a budget", gpus, "add --days (e.g. --days 14), or --dollars, or --flops"
        )

    notes: list[str] = []
    gpu_name = cluster.gpu.name if cluster else None
    gpu_count = cluster.count if cluster else None
    source, compute, budget_days = "", None, days
    if flops_value is not None:
        source, compute = "flops", flops_value
    elif days is not None:
        assert cluster is not None
        compute = _check_flops(cluster.peak_flops * mfu * days * SECONDS_PER_DAY, "GPUs x days")
        source = "gpus x days"
        notes.append(
            f"{cluster.count} x {cluster.gpu.name} at {cluster.gpu.bf16_tflops:g} TFLOP/s bf16 peak, MFU {mfu:g}"
        )
    elif dollars is not None:
        gpu = cluster.gpu if cluster else get_gpu(DEFAULT_GPU)
        price, is_example, price_note = hourly_price(gpu, price_per_hour)
        gpu_hours = dollars / price
        compute = _check_flops(gpu_hours * 3600.0 * gpu.bf16_flops * mfu, "dollars")
        source = "dollars"
        gpu_name = gpu.name
        if is_example:
            notes.append(price_note)
        notes.append(f"{gpu_hours:,.0f} GPU-hours of {gpu.name} at MFU {mfu:g}")
        if cluster is not None:
            budget_days = gpu_hours / cluster.count / 24.0

    fixed = {(False, False): "none", (True, False): "params", (False, True): "tokens", (True, True): "both"}[
        (n_params is not None, n_tokens is not None)
    ]
    compute_given = compute is not None
    if fixed == "both":
        assert n_params is not None and n_tokens is not None
        implied = _check_flops(6.0 * n_params * n_tokens, "6 x params x tokens")
        if compute is not None and abs(implied - compute) > CONSISTENCY * compute:
            raise UserError(
                f"params x tokens disagree with the compute budget ({source})",
                f"6ND = {implied:.3g} FLOP vs {compute:.3g} FLOP",
                "drop --params, --tokens or the compute budget",
            )
        if compute is None:
            compute, source = implied, "params x tokens"
    elif fixed == "params":
        assert n_params is not None
        if compute is None:
            n_tokens = TOKENS_PER_PARAM * n_params
            compute, source = _check_flops(6.0 * n_params * n_tokens, "params"), "params"
            notes.append(
                "tokens not given: D = 20 N (rule of thumb, Hoffmann et al. 2022); each law picks its D for this N"
            )
        else:
            n_tokens = compute / (6.0 * n_params)
    elif fixed == "tokens":
        assert n_tokens is not None
        if compute is None:
            n_params = n_tokens / TOKENS_PER_PARAM
            compute, source = _check_flops(6.0 * n_params * n_tokens, "tokens"), "tokens"
            notes.append(
                "parameters not given: N = D / 20 (rule of thumb, Hoffmann et al. 2022); each law then picks its own N"
            )
        else:
            n_params = compute / (6.0 * n_tokens)
    if compute is None:
        raise UserError(
            "no compute budget", None, "give --flops, or --gpus with --days, or --dollars, or --params and/or --tokens"
        )
    return Budget(
        flops=compute,
        source=source,
        fixed=fixed,
        compute_given=compute_given,
        n_params=n_params,
        n_tokens=n_tokens,
        gpu=gpu_name,
        gpu_count=gpu_count,
        days=budget_days,
        mfu=mfu,
        dollars=dollars,
        price_per_hour=price_per_hour,
        notes=tuple(notes),
    )


@dataclass(frozen=True)
class Allocation:
    """One law's answer for a budget: N, D, C = 6ND and the loss it predicts.

    ``optimal_n_params``/``optimal_n_tokens`` are the law's compute-optimal split of the
    same ``flops``, for comparison when the budget fixed N or D. ``predicted_loss`` is in
    nats/token on ``loss_dataset`` from ``loss_law``'s L(N, D); the Chinchilla family and
    Kaplan are measured on different data and tokenizers and are not comparable.
    """

    law: str
    n_params: float
    n_tokens: float
    tokens_per_param: float
    flops: float
    optimal_n_params: float
    optimal_n_tokens: float
    predicted_loss: float | None
    loss_law: str | None
    loss_dataset: str | None
    source: str
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict:
        return {
            "law": self.law,
            "n_params": self.n_params,
            "n_tokens": self.n_tokens,
            "tokens_per_param": self.tokens_per_param,
            "flops": self.flops,
            "optimal_n_params": self.optimal_n_params,
            "optimal_n_tokens": self.optimal_n_tokens,
            "predicted_loss": self.predicted_loss,
            "loss_law": self.loss_law,
            "loss_dataset": self.loss_dataset,
            "source": self.source,
            "notes": list(self.notes),
        }


def _allocate_one(budget: Budget, name: str | ScalingLaw) -> Allocation:
    law = name if isinstance(name, ScalingLaw) else get_law(name)
    notes: list[str] = []
    flops = budget.flops
    if budget.fixed == "both":
        assert budget.n_params is not None and budget.n_tokens is not None
        n, d = budget.n_params, budget.n_tokens
    elif budget.fixed == "params":
        assert budget.n_params is not None
        n = budget.n_params
        if not budget.compute_given:
            # L(N, D) falls forever as D grows at fixed N, so "the best D for this N" is
            # unbounded; take the D at which this law calls N compute-optimal (the inverse
            # of N_opt(C), Hoffmann et al. 2022, Table 3).
            flops = law.compute_for_params(n)
            notes.append("tokens: where this law makes the given size compute-optimal")
        d = flops / (6.0 * n)
    elif budget.fixed == "tokens":
        assert budget.n_tokens is not None
        d = budget.n_tokens
        if not budget.compute_given:
            flops = law.compute_for_tokens(d)
            notes.append("parameters: the size this law makes compute-optimal for the given tokens")
        n = flops / (6.0 * d)
    else:
        n, d = law.compute_optimal(flops)
    opt_n, opt_d = law.compute_optimal(flops)
    loss, loss_law, dataset = loss_of(law, n, d)
    if loss_law is not None and loss_law != law.name:
        notes.append(f"no loss of its own: loss from the {loss_law} fit")
    if law.name == "kaplan":
        notes.append("Kaplan's N excludes embeddings; its loss is on WebText2 (GPT-2 BPE), not comparable")
    if getattr(law, "n_counts", "params") == "non_embedding_params":
        notes.append("this law's N counts non-embedding parameters")
    return Allocation(
        law=law.name,
        n_params=n,
        n_tokens=d,
        tokens_per_param=d / n,
        flops=flops,
        optimal_n_params=opt_n,
        optimal_n_tokens=opt_d,
        predicted_loss=loss,
        loss_law=loss_law,
        loss_dataset=dataset,
        source=law.source,
        notes=tuple(notes),
    )


def allocate(budget: Budget, laws: list[str] | None = None, *,
             extra_laws: Sequence[ScalingLaw] = ()) -> list[Allocation]:
    """Each law's (N, D, loss) for ``budget``, in the order given (default: all of LAWS),
    then each of ``extra_laws`` (law objects, e.g. a ``plan.fitted.FittedLaw`` read from
    ``law.json``), answered the same way.

    - Nothing fixed: the law's compute-optimal split of C (``ScalingLaw.compute_optimal``).
    - N fixed with a compute budget: D = C / (6 N), the same for every law; D likewise.
    - N fixed without one (``compute_given`` False): the law's own C at which N is
      compute-optimal, D = C / (6 N). For the Chinchilla form the loss-minimising D at
      fixed N is unbounded, so a compute-optimal point is the only finite answer.
    - Both fixed: N and D as given; each law only predicts the loss.
    """
    names: list[str | ScalingLaw] = list(LAWS) if laws is None else list(laws)
    names += list(extra_laws)
    if not names:
        raise UserError("no scaling law chosen", "[]", "name at least one of " + ", ".join(LAWS))
    return [_allocate_one(budget, name) for name in names]
