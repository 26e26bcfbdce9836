"""Markdown table of a recipe-probe JSON (`benchmarks/probe_indexer_recipe.py`): one row per variant of one run.

python benchmarks/probe_table.py benchmarks/indexer_ablation.json [--run -1]
"""

from __future__ import annotations

import argparse
import json

COLUMNS = [
    ("untrained_ami_c1", "untrained AMI(c1)"),
    ("ami_c1_after_encoder_warmup", "after encoder warm-up"),
    ("ami_c1", "trained AMI(c1)"),
    ("ami_c1c2_fine", "AMI(c1c2, fine)"),
    ("collision_rate", "collisions"),
    ("nmi_c2_c1", "NMI(c2;c1)"),
    ("codebook_f1", "recon. F1"),
    ("wall_s", "wall s"),
]


def render(run: dict) -> str:
    lines = ["| variant | " + " | ".join(title for _, title in COLUMNS) + " |", "|:--|" + "--:|" * len(COLUMNS)]
    for record in run["records"]:
        cells = []
        for key, _ in COLUMNS:
            value = record.get(key)
            cells.append("" if value is None else (f"{value:.0f}" if key == "wall_s" else f"{value:.4f}"))
        lines.append(f"| {record['variant']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\nCommand: `{run['command']}`\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("path")
    parser.add_argument("--run", type=int, default=-1, help="Which run of the file (default: the last).")
    args = parser.parse_args()
    print(render(json.load(open(args.path))["runs"][args.run]))


if __name__ == "__main__":
    main()
