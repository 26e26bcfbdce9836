"""`lmindexer` command line: one sub-command per job, each parsed by `HfArgumentParser` from dataclasses."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser


@dataclass
class DemoArguments:
    output_dir: str = field(default="runs/demo", metadata={"help": "Where the demo indexer and its ID map go."})
    num_items: int = field(default=480, metadata={"help": "Size of the generated demo catalogue."})
    seed: int = field(default=0)


def run_demo(args: DemoArguments) -> dict:
    """Build a small untrained indexer, save it, reload it through AutoModel, assign IDs to the demo corpus."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from ..modeling_lmindexer import LMIndexerConfig, LMIndexerForSemanticID, SemanticIDMap
    from .assignment import assign_corpus
    from .demo import generate_demo_corpus, tiny_t5_config, train_tokenizer

    torch.manual_seed(args.seed)
    items = generate_demo_corpus(args.num_items, seed=args.seed)
    texts = [f"{item['title']}; {item['brand']}" for item in items]
    tokenizer = train_tokenizer(texts)
    config = LMIndexerConfig(
        backbone_config=tiny_t5_config(len(tokenizer)).to_dict(), id_length=3, codebook_sizes=[8, 8, 8], dedup_size=args.num_items
    )
    output_dir = Path(args.output_dir)
    LMIndexerForSemanticID(config).save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    model = AutoModel.from_pretrained(output_dir)
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    codes = assign_corpus(model, tokenizer, texts, progress=False)
    id_map = SemanticIDMap.from_codes(
        [item["item_id"] for item in items], torch.as_tensor(codes), config.codebook_sizes, config.dedup_size
    )
    id_map.save(output_dir / "semantic_id_map.safetensors")
    for item in items[:5]:
        print(f"{item['item_id']}  {id_map.semantic_id(item['item_id'])}  {item['title']}")
    stats = id_map.statistics()
    print(json.dumps(stats, indent=2))
    print(f"Saved an untrained indexer, its tokenizer and ID map to {output_dir}.")
    return stats


COMMANDS = {
    "demo": (DemoArguments, run_demo, "Build, save, reload and run a small untrained indexer on the demo corpus."),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: lmindexer {" + ",".join(COMMANDS) + "} [options]\n")
        for name, (_, _, help_text) in COMMANDS.items():
            print(f"  {name:<10} {help_text}")
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    argument_classes, runner, _ = COMMANDS[argv[0]]
    if not isinstance(argument_classes, tuple):
        argument_classes = (argument_classes,)
    parser = HfArgumentParser(argument_classes, prog=f"lmindexer {argv[0]}")
    parsed = parser.parse_args_into_dataclasses(args=argv[1:])
    runner(*parsed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
