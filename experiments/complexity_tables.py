"""Prints the README's complexity tables (markdown) from the analytic counter and XLA.

python experiments/complexity_tables.py            # about 20 s: compiles B0-B7 forward passes for XLA's count
python experiments/complexity_tables.py --noxla    # analytic figures only, instantly
"""

from __future__ import annotations

import sys

from configs import compound, efficientnet
from effscale import complexity, scaling, spec

PAPER_MACS = {"b0": 0.39, "b1": 0.70, "b2": 1.0, "b3": 1.8, "b4": 4.2, "b5": 9.9, "b6": 19, "b7": 37}
KERAS_PARAMS = {
    "b0": 5_288_548,
    "b1": 7_794_184,
    "b2": 9_109_994,
    "b3": 12_233_232,
    "b4": 19_341_616,
    "b5": 30_389_784,
    "b6": 43_040_704,
    "b7": 66_347_960,
}


def presets_table(xla: bool) -> str:
    rows = [
        "| preset | w | d | res | params (effscale) | params (Keras) | MACs (effscale) | MACs (paper) | ratio "
        "| activations | XLA FLOPs / (2 MACs) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, paper in PAPER_MACS.items():
        s = spec.build(efficientnet.get_config(name).model)
        r = complexity.analyse(s)
        ratio = f"{complexity.xla_flops(s) / (2 * r.macs):.3f}" if xla else "-"
        rows.append(
            f"| {name.upper()} | {s.width:g} | {s.depth:g} | {s.resolution} | {r.params:,} | {KERAS_PARAMS[name]:,} "
            f"| {r.macs / 1e9:.3f}B | {paper}B | {r.macs / 1e9 / paper:.3f} | {r.activations / 1e6:.1f}M | {ratio} |"
        )
    return "\n".join(rows)


def compound_table() -> str:
    factor = scaling.flops_factor(scaling.ALPHA, scaling.BETA, scaling.GAMMA)
    rows = [
        "| phi | depth | width | res | blocks | params | MACs | MACs / B0 | 1.92^phi | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = None
    for phi in range(7):
        s = spec.build(compound.get_config(f"phi={phi}").model)
        r = complexity.analyse(s)
        base = base or r.macs
        rows.append(
            f"| {phi} | {s.depth:.3f} | {s.width:.3f} | {s.resolution} | {len(s.blocks)} | {r.params / 1e6:.2f}M "
            f"| {r.macs / 1e9:.3f}B | {r.macs / base:.2f} | {factor**phi:.2f} | {r.macs / base / factor**phi:.3f} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    print(presets_table(xla="--noxla" not in sys.argv))
    print()
    print(compound_table())
