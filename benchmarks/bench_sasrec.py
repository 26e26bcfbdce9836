"""SASRec (Kang & McAuley, 2018) on a shared/data sequence folder, on the protocol of `lmindexer bench rec`.

RecBole 1.2.1 installs offline here but does not import under numpy 2 (`np.bool8`), so this is a compact
implementation: item + learned position embeddings, causal pre-norm Transformer blocks, the item table tied as the
output layer, trained with a full softmax over every item at every real position of the training part of each
sequence (all but the last two items), which converges in far fewer epochs than the original one-negative BCE.

Protocol, the same as `lmindexer bench rec` and most-popular there: leave-one-out, the second-to-last item is the
validation target (it picks the epoch), the last the test target, full ranking over every item of the sequences,
history items not removed from the ranking. With `--test_users N --sample_seed S` the test figures are also given
on the seeded sample of N users that `bench rec` draws (`sampled_test_rows`), and `--bench_rec_json FILE` adds the
record to a `bench rec` result on that same sample.

    python benchmarks/bench_sasrec.py --data ../shared/data/amazon-beauty --test_users 2000 --sample_seed 0 \
        --output benchmarks/rec_sasrec_beauty.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lmindexer.trainers.bench.rec import test_sequences, write_bench_rec
from lmindexer.trainers.bench.results import command_line
from lmindexer.trainers.downstream.data import sampled_test_rows
from lmindexer.trainers.downstream.ranking_metrics import ranking_metrics


class SASRec(nn.Module):
    def __init__(self, num_items: int, max_length: int, hidden: int, blocks: int, heads: int, dropout: float):
        super().__init__()
        self.items = nn.Embedding(num_items + 1, hidden, padding_idx=0)  # row 0: padding
        self.positions = nn.Embedding(max_length, hidden)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(hidden, heads, hidden, dropout, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(
            layer, blocks, enable_nested_tensor=False
        )  # its `.layers` are run one by one
        self.norm = nn.LayerNorm(hidden)
        self.apply(self._init_weights)
        causal = torch.triu(torch.ones(max_length, max_length, dtype=torch.bool), diagonal=1)
        self.register_buffer("causal", causal, persistent=False)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # Small normal initialisation: with torch's N(0, 1) embeddings the tied output starts with logits of +-60.
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, sequences: torch.Tensor) -> torch.Tensor:
        """Hidden states (batch, length, hidden) of left-padded item sequences (0 = padding)."""
        length = sequences.shape[1]
        real = (sequences > 0).unsqueeze(-1)
        states = self.items(sequences) + self.positions.weight[-length:]
        # Padding rows are zeroed rather than masked out of attention: a fully masked row would be NaN.
        states = self.dropout(states) * real
        for block in self.blocks.layers:  # padding is zeroed after every block, so no block attends to learned pads
            states = block(states, src_mask=self.causal[:length, :length], is_causal=True) * real
        return self.norm(states)

    def scores(self, states: torch.Tensor) -> torch.Tensor:
        return states @ self.items.weight[1:].T  # item k's score is column k - 1


def left_padded(sequences: list[list[int]], max_length: int) -> torch.Tensor:
    batch = torch.zeros(len(sequences), max_length, dtype=torch.long)
    for row, items in enumerate(sequences):
        items = items[-max_length:]
        if items:
            batch[row, -len(items) :] = torch.tensor(items)
    return batch


def train_epoch(model, optimiser, sequences: list[list[int]], max_length: int, batch_size: int, rng) -> float:
    model.train()
    order = rng.permutation(len(sequences))
    total, count = 0.0, 0
    for start in range(0, len(order), batch_size):
        chosen = [sequences[i] for i in order[start : start + batch_size]]
        inputs = left_padded([items[:-1] for items in chosen], max_length)
        targets = left_padded([items[1:] for items in chosen], max_length)
        real = targets > 0
        states = model(inputs)[real]  # only real positions reach the item softmax
        loss = nn.functional.cross_entropy(model.scores(states), targets[real] - 1)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        total, count = total + loss.item() * int(real.sum()), count + int(real.sum())
    return total / max(count, 1)


@torch.no_grad()
def rank(model, histories: list[list[int]], max_length: int, top_k: int, batch_size: int = 512) -> list[list[int]]:
    model.eval()
    ranked = []
    for start in range(0, len(histories), batch_size):
        inputs = left_padded(histories[start : start + batch_size], max_length)
        scores = model.scores(model(inputs)[:, -1])
        ranked.extend((scores.topk(top_k, dim=-1).indices + 1).tolist())
    return ranked


def evaluate(
    model, users: list[list[int]], rows: list[int], cut: int, max_length: int, ks: list[int], names: list[str]
) -> dict:
    """Metrics of predicting item -cut of each user at `rows` from the items before it (cut 1: test, 2: validation)."""
    histories = [users[row][:-cut] for row in rows]
    targets = [{names[users[row][-cut]]} for row in rows]
    ranked = rank(model, histories, max_length, max(ks))
    return ranking_metrics([[names[item] for item in items] for items in ranked], targets, ks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="Folder with sequences.jsonl (shared/data layout).")
    parser.add_argument("--max_length", type=int, default=50)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--heads", type=int, default=1)
    parser.add_argument("--dropout", type=float, default=0.5)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument(
        "--patience", type=int, default=5, help="Stop after this many epochs without a better valid NDCG@10."
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--test_users", type=int, default=2000, help="Seeded sample size as in bench rec; 0: all users."
    )
    parser.add_argument("--sample_seed", type=int, default=0)
    parser.add_argument("--ks", default="5,10")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0: torch's default.")
    parser.add_argument(
        "--bench_rec_json", default=None, help="A bench rec JSON on the same sample to add the record to."
    )
    parser.add_argument("--output", default="benchmarks/rec_sasrec.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    ks = [int(k) for k in args.ks.split(",")]

    users_named = test_sequences(Path(args.data) / "sequences.jsonl")
    names = [""] + sorted({item for items in users_named for item in items})
    index = {name: i for i, name in enumerate(names)}
    users = [[index[item] for item in items] for items in users_named]
    training = [items[:-2] for items in users if len(items[:-2]) >= 2]
    everyone = list(range(len(users)))
    sample = sampled_test_rows(len(users), args.test_users, args.sample_seed)

    model = SASRec(len(names) - 1, args.max_length, args.hidden, args.blocks, args.heads, args.dropout)
    optimiser = torch.optim.Adam(model.parameters(), lr=args.learning_rate, betas=(0.9, 0.98))
    best, best_state, best_epoch, curve = -1.0, None, 0, []
    started = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        loss = train_epoch(model, optimiser, training, args.max_length, args.batch_size, rng)
        valid = evaluate(model, users, everyone, 2, args.max_length, ks, names)
        curve.append(
            {
                "epoch": epoch,
                "loss": round(loss, 4),
                "valid_ndcg@10": valid["ndcg@10"],
                "valid_recall@10": valid["recall@10"],
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
        print(json.dumps(curve[-1]), flush=True)
        if valid["ndcg@10"] > best:
            best, best_epoch = valid["ndcg@10"], epoch
            best_state = {key: value.clone() for key, value in model.state_dict().items()}
        elif epoch - best_epoch >= args.patience:
            break
    model.load_state_dict(best_state)
    train_seconds = round(time.perf_counter() - started, 1)
    test_all = evaluate(model, users, everyone, 1, args.max_length, ks, names)
    test_sample = evaluate(model, users, sample, 1, args.max_length, ks, names)
    steps_per_epoch = math.ceil(len(training) / args.batch_size)
    record = {
        "ids": "SASRec",
        "history_format": "item IDs",
        "seed": args.seed,
        "best_epoch": best_epoch,
        "max_steps": steps_per_epoch * best_epoch,
        "batch_size": args.batch_size,
        "wall_s": train_seconds,
        "metrics": {f"test_{key}": value for key, value in test_sample.items()},
    }
    result = {
        "command": command_line(),
        "data": args.data,
        "machine": f"{platform.machine()} {platform.processor()}".strip(),
        "settings": vars(args),
        "users": len(users),
        "test_users_sampled": len(sample),
        "training_sequences": len(training),
        "curve": curve,
        "best_epoch": best_epoch,
        "train_seconds": train_seconds,
        "test_all_users": test_all,
        "test_sample": test_sample,
        "record": record,
    }
    Path(args.output).write_text(json.dumps(result, indent=2))
    print(json.dumps({"best_epoch": best_epoch, "test_all_users": test_all, "test_sample": test_sample}, indent=2))
    if args.bench_rec_json:
        add_to_bench_rec(Path(args.bench_rec_json), record, args.data, len(sample), args.sample_seed)


def add_to_bench_rec(path: Path, record: dict, data: str, sample_size: int, sample_seed: int) -> None:
    bench = json.loads(path.read_text())
    settings = bench["settings"]
    if Path(bench["data"]).resolve() != Path(data).resolve():
        raise SystemExit(f"{path} is a bench rec result on {bench['data']}, not on {data}: not added.")
    if (settings["test_users_evaluated"], settings["sample_seed"]) != (sample_size, sample_seed):
        raise SystemExit(
            f"{path} was evaluated on {settings['test_users_evaluated']} users (sample seed "
            f"{settings['sample_seed']}), not on this sample: not added."
        )
    bench["baselines"] = [entry for entry in bench.get("baselines", []) if entry["ids"] != record["ids"]] + [record]
    write_bench_rec(bench, path, Path(bench["data"]).name)
    print(f"added to {path}")


if __name__ == "__main__":
    main()
