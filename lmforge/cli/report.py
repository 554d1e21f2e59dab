"""The report verb: a run's predictions beside its measurements, or several runs side by side."""

from __future__ import annotations

from lmforge.cli.output import print_json, print_lines, print_table


def report(run_dirs: list[str], /, *, out: str | None = None, json: bool = False) -> None:
    """What a run predicted beside what it measured, or several runs side by side.

    One run: a table of parameters, FLOPs, tokens, tokens/s, MFU, time, memory per device
    (and the model states each rank holds), precision and validation loss (where a law
    predicted it), each with its prediction from plan.json, its measurement from
    report.json (parameters counted in model.safetensors) and the error: relative for sizes
    and speeds, the difference in nats for the loss. Several runs: one table of their final
    numbers and one PNG overlaying their loss curves (validation where logged, else
    training), against tokens and against wall time. A run still training reports what
    metrics.jsonl holds so far. Reads JSON only: imports no torch.

    Args:
        run_dirs: one or more run directories written by lmforge train
        out: several runs: the PNG of their loss curves (default: report.png in the current directory; an existing
            one is replaced)
        json: print JSON instead of tables

    Examples:
        lmforge report runs/quickstart
        lmforge report runs/small runs/medium runs/large --out compare.png
    """
    from lmforge.report.overlay import resolve_out
    from lmforge.report.run import read_runs

    records = read_runs(run_dirs)
    png = resolve_out(out, len(records))
    if png is None:
        from lmforge.report import compare

        if json:
            print_json(compare.to_dict(records[0]))
            return
        title, columns, cells, lines = compare.table(records[0])
        print_table(title, columns, cells)
        print_lines(*lines)
        return
    from lmforge.report import side_by_side
    from lmforge.report.overlay import write_overlay

    path = write_overlay(records, png)
    if json:
        print_json({"runs": [side_by_side.final_numbers(r) for r in records], "plot": str(path)})
        return
    title, columns, cells, caption = side_by_side.table(records)
    print_table(title, columns, cells, caption=caption, right_align_from=2)
    print_lines(f"loss curves: {path}")
