"""leaderboard.cost: parameters and MACs against closed forms; the CLI's JSON object."""

import json
from pathlib import Path

import torch

from leaderboard.cost import count_macs, count_parameters, main, model_cost

CONFIG = Path(__file__).parents[1] / "experiments" / "hourglass" / "synthetic.yaml"


def test_parameters_and_macs_closed_form():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(8 * 16 * 16, 5))
    assert count_parameters(net) == (3 * 9 * 8 + 8) + (8 * 256 * 5 + 5)
    # conv: each of the 8 x 16 x 16 outputs takes 3 x 3 x 3 multiply-accumulates; linear: 2048 x 5.
    assert count_macs(net, 16) == 8 * 16 * 16 * 27 + 2048 * 5
    cost = model_cost(net, 16, repeats=2)
    assert set(cost["images_per_s"]) == {"1", "32"} and all(v > 0 for v in cost["images_per_s"].values())


def test_cli_json_on_the_demo_config(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([str(CONFIG), "--json", "--repeats", "1", "--data.init_args.num_workers=0"]) == 0
    cost = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"params", "macs", "images_per_s"} <= set(cost) and cost["input_size"] == 96
    assert 1e5 < cost["params"] < 1e7 and cost["macs"] > cost["params"]
