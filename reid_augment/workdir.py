"""The work dir: where the stages leave their files for the next ones, and which file is which.

```
WORKDIR/
  poses.csv           poses of the training images (estimate-poses, build-pairs)
  poses-test.csv      poses of a separate test split (build-pairs --test-poses)
  pairs-train.csv     training pairs (build-pairs)
  pairs-test.csv      test pairs (build-pairs)
  pairs.json          the pair settings and counts (build-pairs)
  pairs-preview.png   a sheet of pairs (preview)
  runs/<name>/        one training run (train); its checkpoints/latest.pt is what generate takes by default
  generated/          images and manifest (generate)
  report/             metrics (evaluate)
```
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

DEFAULT_ROOT = "reid-augment-work"


@dataclass(frozen=True)
class WorkDir:
    """The paths of the work dir `root`. Pure path arithmetic, except `target_poses` and `latest_checkpoint`,
    which look at what is there; nothing is created."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def poses(self) -> Path:
        """Poses of the training images: the pose bank of `generate` too."""
        return self.root / "poses.csv"

    @property
    def test_poses(self) -> Path:
        """Poses of a separate test split; build-pairs writes it only when given one."""
        return self.root / "poses-test.csv"

    def target_poses(self) -> Path:
        """The poses `evaluate` reads the test pairs' targets from: `test_poses` when that file exists, else
        `poses` (test identities held out of the training poses)."""
        return self.test_poses if self.test_poses.is_file() else self.poses

    @property
    def train_pairs(self) -> Path:
        return self.root / "pairs-train.csv"

    @property
    def test_pairs(self) -> Path:
        return self.root / "pairs-test.csv"

    @property
    def pairs_record(self) -> Path:
        """build-pairs' settings and counts."""
        return self.root / "pairs.json"

    @property
    def pairs_preview(self) -> Path:
        return self.root / "pairs-preview.png"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def run(self, name: str) -> Path:
        """The run dir of a training run, by default named after its recipe."""
        return self.runs / name

    def latest_checkpoint(self) -> Path:
        """The newest (by modification time) `runs/*/checkpoints/latest.pt`.

        Raises:
            InputError: no run has a checkpoint yet.
        """
        found = sorted(self.root.glob("runs/*/checkpoints/latest.pt"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise InputError(f"{self.root}/runs: no trained checkpoint; train one with `reid-augment train`, or "
                             f"pass --checkpoint (a file, or the bundled cuhk03-small)")
        return found[-1]

    @property
    def generated(self) -> Path:
        return self.root / "generated"

    @property
    def report(self) -> Path:
        return self.root / "report"


# What a verb takes from a work dir when its caller leaves an argument out: the WorkDir attribute per argument.
VERB_DEFAULTS = {
    "train": {"pairs": "train_pairs", "poses": "poses"},  # And the run dir runs/<recipe name> (`WorkDir.run`).
    "generate": {"checkpoint": "latest_checkpoint", "poses": "poses", "out_dir": "generated"},
    "evaluate": {"pairs": "test_pairs", "poses": "target_poses", "report_dir": "report"},
    "preview": {"pairs": "train_pairs", "poses": "poses", "output": "pairs_preview"},
}


def fill_in(verb: str, workdir: str | os.PathLike | None, **given) -> tuple:
    """`given`'s values in order, each one left None taken from the work dir (`VERB_DEFAULTS`), so a Python caller
    of a verb gets the CLI's defaults. A default that depends on more than the work dir (train's run dir,
    runs/<recipe name>) is filled by the verb before it calls this.

    Raises:
        InputError: a value is missing and there is no work dir, or the work dir lacks it (no checkpoint yet).
    """
    missing = [name for name, value in given.items() if value is None]
    if missing and workdir is None:
        raise InputError(f"{verb}: give {', '.join(missing)}, or a work dir to take them from")
    work = WorkDir(workdir) if missing else None
    values = []
    for name, value in given.items():
        if value is None:
            value = getattr(work, VERB_DEFAULTS[verb][name])
            value = value() if callable(value) else value
        values.append(value)
    return tuple(values)
