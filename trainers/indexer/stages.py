"""The one stage vocabulary of progressive indexer training (Algorithm 1 of the paper).

`Phase` names what a stage does; `Stage` is a phase at one ID position; `plan_stages` lists them in order.
Trainers declare which phase they train (`IndexerStageTrainer.phase`), per-phase arguments are derived from
`TRAINED_PHASES`, and stage names (`codebook_t2`) are what logs, checkpoints and metrics are keyed by.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Phase(str, enum.Enum):
    RECONSTRUCTOR_WARMUP = "reconstructor_warmup"  # reconstructor learns from hints alone, backbone frozen
    ENCODER_WARMUP = "encoder_warmup"  # continuous h^t stands in for the code vector
    CODEBOOK_INIT = "kmeans"  # codebook t = k-means over the h^t of the whole corpus
    CODEBOOK = "codebook"  # straight-through training with codebook t
    ASSIGN = "assign"  # c^t for every document, frozen afterwards

    @property
    def runs_trainer(self) -> bool:
        return self in TRAINED_PHASES


# Phases that run a `transformers.Trainer`, each with its own epochs, learning rate and batch size.
TRAINED_PHASES = (Phase.RECONSTRUCTOR_WARMUP, Phase.ENCODER_WARMUP, Phase.CODEBOOK)
POSITION_PHASES = (Phase.ENCODER_WARMUP, Phase.CODEBOOK_INIT, Phase.CODEBOOK, Phase.ASSIGN)


@dataclass(frozen=True)
class Stage:
    phase: Phase
    position: int

    @property
    def name(self) -> str:
        return self.phase.value if self.phase is Phase.RECONSTRUCTOR_WARMUP else f"{self.phase.value}_t{self.position}"


def plan_stages(id_length: int) -> list[Stage]:
    """Reconstructor warm-up, then for each position: encoder warm-up, k-means, straight-through, assignment."""
    stages = [Stage(Phase.RECONSTRUCTOR_WARMUP, 1)]
    for position in range(1, id_length + 1):
        stages += [Stage(phase, position) for phase in POSITION_PHASES]
    return stages
