"""Named crash points for the fault-injection tests: the process kills itself (SIGKILL, no cleanup) when the
environment variable `LMINDEXER_KILL_AT` names the point it reaches. Inert otherwise; a dictionary lookup.

Points: `trainer_checkpoint.after_weights` (a Trainer checkpoint with weights but no trainer_state.json yet),
`stage_checkpoint.between_renames`, `final_save.staged` (the new folder complete beside the old one),
`final_save.between_renames`, `assign.map_write` (the lock held, the extended map not yet written),
`finetune.evaluation` (a fine-tuned model saved, its test evaluation not yet run).
"""

from __future__ import annotations

import os
import signal

KILL_AT_ENV = "LMINDEXER_KILL_AT"


def crash_point(name: str) -> None:
    if os.environ.get(KILL_AT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
