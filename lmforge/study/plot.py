"""What a domain study writes: study.json (every number), study.csv (one row per arm) and
study.png (domain against general bits per byte, one point per arm, the mixture shares
joined in share order as the frontier a mixture traces)."""

from __future__ import annotations

import csv
import io
import json

from lmforge import __version__
from lmforge.fileio import save_figure, write_atomic


def write_outputs(result, settings: dict, domain: str, general: str, tokenizer) -> None:
    out = result.out
    record = {
        "settings": settings, "written_by": f"lmforge {__version__}",
        "tokenizer": {"used": result.tokenizer, "sha256": tokenizer.sha256, "vocab_size": tokenizer.vocab_size},
        "bytes_per_token": result.fertility, "texts": list(result.texts), "domain": domain, "general": general,
        "weight": result.weight, "best": result.best, "arms": [a.to_dict() for a in result.arms],
    }
    write_atomic(out / "study.json", json.dumps(record, indent=2) + "\n")
    names = list(result.texts)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["arm", "domain_share", "flops", "steps", *[f"bpb_{n}" for n in names],
                     *[f"loss_{n}" for n in names]])
    for a in result.arms:
        writer.writerow([a.name, "" if a.share is None else a.share, f"{a.flops:.6g}", a.steps,
                         *[f"{a.bits_per_byte.get(n, float('nan')):.5f}" for n in names],
                         *[f"{a.loss.get(n, float('nan')):.5f}" for n in names]])
    write_atomic(out / "study.csv", buffer.getvalue())
    plot(result, domain, general, out / "study.png")


def plot(result, domain: str, general: str, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    mixes = sorted((a for a in result.arms if a.share is not None), key=lambda a: a.share)
    xs = [a.bits_per_byte[general] for a in mixes]
    ys = [a.bits_per_byte[domain] for a in mixes]
    ax.plot(xs, ys, "-o", color="tab:blue", label="domain share of the tokens")
    for a, x, y in zip(mixes, xs, ys, strict=True):
        ax.annotate(f"{a.name} ({a.share:g})", (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    for a in result.arms:
        if a.share is None:
            x, y = a.bits_per_byte[general], a.bits_per_byte[domain]
            ax.plot([x], [y], "s", color="tab:red", label="continued pretraining")
            ax.annotate(a.name, (x, y), textcoords="offset points", xytext=(5, -12), fontsize=8)
    ax.set_xlabel(f"general ({general}) held-out bits per byte")
    ax.set_ylabel(f"domain ({domain}) held-out bits per byte")
    ax.set_title(f"equal compute per arm ({result.arms[0].flops:.3g} FLOPs); best at weight {result.weight:g}: "
                 f"{result.best}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
