"""Short real trainings on synthetic data that must reach an NME bound (`make test-slow`, minutes)."""

import pytest


@pytest.mark.slow
def test_demo_training_beats_the_mean_shape_clearly(tmp_path, monkeypatch):
    from experiments.demo import main

    monkeypatch.chdir(tmp_path)
    nme = main(["--results-dir", str(tmp_path / "results"), "--workdir", str(tmp_path / "runs")])
    # Face-size NME on the synthetic test split. Measured with this config: hourglass about 3.5 %.
    assert nme["stacked hourglass"] < 5.0
    assert nme["stacked hourglass"] < 0.4 * nme["mean shape"]
