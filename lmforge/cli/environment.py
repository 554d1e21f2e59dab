"""The env verb: the machine as lmforge sees it."""

from __future__ import annotations

from lmforge.cli.output import print_json, print_table


def env(*, json: bool = False, remeasure: bool = False) -> None:
    """The machine as lmforge sees it, to paste into a bug report: Python, torch, the
    device(s), the CPU's model, capability and flags, whether bf16 is fast here, the
    measured fp32 and bf16 matmul peaks, memory, and the precision and kernels lmforge
    will use here.

    Measurements are made once per machine and cached (LMFORGE_CACHE_DIR, default
    ~/.cache/lmforge); LMFORGE_CPU_BF16=0 or 1 forces the bf16 decision.

    Args:
        json: print JSON instead of a table
        remeasure: drop this machine's cached measurements and measure again

    Examples:
        lmforge env
        lmforge env --json --remeasure
    """
    from lmforge.environment import describe_environment

    info = describe_environment(remeasure=remeasure)
    if json:
        print_json(info)
        return
    cpu, will = info["cpu"], info["lmforge_will_use"]
    peaks = cpu["matmul_peak_flops"]
    probe = ("forced by " + cpu["bf16_decided_by"] if cpu["probe_bf16_flops"] is None else
             f"probe: bf16 {cpu['probe_bf16_flops'] / 1e9:,.1f} GFLOP/s vs fp32 {cpu['probe_fp32_flops'] / 1e9:,.1f}")
    memory = info["memory"]
    rows = [
        ["lmforge / Python / torch", f"{info['lmforge']} / {info['python']} / {info['torch']}"
                                     + (f" (CUDA {info['cuda']})" if info["cuda"] else "")],
        ["platform", info["platform"]],
        ["device", info["device"] + "".join(f"; GPU {g['index']}: {g['name']}, {g['memory_bytes'] / 2**30:.1f} GiB, "
                                             f"bf16 {'yes' if g['bf16'] else 'no'}" for g in info["gpus"])],
        ["CPU", f"{cpu['model']}, {cpu['cores']} cores, {info['threads']} torch threads, {cpu['machine']}"],
        ["CPU capability (PyTorch kernels)", cpu["capability"]],
        ["CPU flags", " ".join(cpu["flags"]) or "-"],
        ["native bf16", f"{'yes' if cpu['native_bf16'] else 'no'} ({probe})"],
        ["matmul peak fp32 / bf16", f"{peaks['fp32'] / 1e9:,.1f} / {peaks['bf16'] / 1e9:,.1f} GFLOP/s (measured)"],
        ["memory", "-" if memory["total_bytes"] is None else
         f"{memory['total_bytes'] / 2**30:.1f} GiB total, {memory['available_bytes'] / 2**30:.1f} GiB available"],
        ["train --train.precision auto", f"{will['train_precision']} ({will['train_precision_reason']})"],
        ["eval / generate of bf16 weights", will["eval_and_generate_dtype_for_bf16_weights"]],
        ["int8 / int4 linears", f"{will['int8_linears']} / {will['int4_linears']}"],
        ["measurements cached in", info["cache"]["path"]],
    ]
    print_table("lmforge env", ["", "value"], rows, right_align_from=2)
