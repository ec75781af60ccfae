"""Tiny manifests for the runner tests (test_runner, test_stages_seeds): the hourglass configs on a few synthetic
faces, one epoch, so that a whole reproduce takes seconds of CPU. Shared here, not in a test file, so that no
test module imports another."""

from pathlib import Path

import yaml

from leaderboard import runner

ROOT = Path(__file__).resolve().parents[1]
HOURGLASS = ROOT / "experiments" / "hourglass"
DATA = ROOT / "experiments" / "data"
TINY = ["--data.init_args.train_size=48", "--data.init_args.val_size=16", "--data.init_args.test_size=18",
        "--data.init_args.num_workers=0", "--data.init_args.image_size=96", "--trainer.max_epochs=1",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def tiny_manifest(tmp_path: Path, extra_args: list[str] = (), experiments: list[dict] | None = None) -> Path:
    """A two-experiment manifest on the hourglass configs, sized for seconds of CPU."""
    experiments = experiments or [
        {"name": "hg-300w", "method": "HGs", "data": str(DATA / "300w.yaml"), "roots": {"root": "300w"},
         "tests": [{"name": "300w", "dataset": "300W", "synthetic": "300w"}]},
        {"name": "hg-aflw2000", "method": "HGs", "data": str(DATA / "aflw.yaml"),
         "roots": {"root": "aflw"},
         "tests": [{"name": "aflw2000", "dataset": "AFLW2000-3D", "synthetic": "aflw2000", "normalizer": "bbox",
                    "derived": {"mean": ["yaw_0_30", "yaw_30_60", "yaw_60_90"]}}]},
    ]
    for e in experiments:
        e["synthetic_args"] = [*TINY, *extra_args]
    manifest = {"paper": "tiny", "title": "Tiny", "references": "tab", "batch": {"total": 16},
                "config": [str(HOURGLASS / "model.yaml")],
                "synthetic": {"config": [str(DATA / "synthetic_small.yaml"), str(HOURGLASS / "synthetic_small.yaml")]},
                "experiments": experiments,
                "tables": [{"table": "Table 2", "rows": {"HRNet": "hg-300w"}},
                           {"table": "Table 7", "rows": {"3DDFA": "hg-aflw2000"}}]}
    names = {e["name"] for e in experiments}
    manifest["tables"] = [t for t in manifest["tables"] if set(t["rows"].values()) <= names]
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return path


def options(tmp_path: Path, **kw) -> runner.RunOptions:
    return runner.RunOptions(**({"data": "synthetic", "results": tmp_path / "results", "workdir": tmp_path / "runs",
                                 "cost_repeats": 1, "wandb": False} | kw))
