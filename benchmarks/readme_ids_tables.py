"""Regenerate README's ID-method tables from the `lmindexer bench ids` JSON files (between the ids-tables markers).

python benchmarks/readme_ids_tables.py benchmarks/ids_beauty.json benchmarks/ids_scientific.json
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from lmindexer.trainers.bench.ids import summary_table

START, END = "<!-- ids-tables:start -->", "<!-- ids-tables:end -->"


def main(paths: list[str], readme: Path = Path("README.md")) -> None:
    tables = []
    for path in paths:
        result = json.loads(Path(path).read_text())
        index = result["settings"]["index"]
        title = (
            f"{Path(result['data']).name}: {index['id_length']} x {index['codebook_size']} + dedup, "
            f"text {index['text_fields']}"
        )
        tables.append(summary_table(result["summary"], title) + f"\nFrom `{path}`; command: `{result['command']}`\n")
    text = readme.read_text()
    block = START + "\n" + "\n".join(tables) + END
    if START in text:
        text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.replace("IDS_TABLES", block)
    readme.write_text(text)


if __name__ == "__main__":
    main(sys.argv[1:])
