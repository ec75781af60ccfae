"""leaderboard.cost: parameters and MACs against closed forms; the CLI's JSON object."""

import json
from pathlib import Path

import torch

from leaderboard import cost as cost_module
from leaderboard.cost import count_macs, count_parameters, main, model_cost

CONFIG = Path(__file__).parents[1] / "experiments" / "hourglass" / "synthetic.yaml"


def tiny_net() -> torch.nn.Module:
    """A conv and a linear layer on 16 px images, whose counts have closed forms."""
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(8 * 16 * 16, 5))


def test_parameters_and_macs_closed_form():
    net = tiny_net()
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


def no_timing(*args, **kwargs):
    raise AssertionError("--no-speed timed a forward pass")


def test_no_speed_counts_the_same_without_timing(monkeypatch):
    """``speed=False``: the full mode's parameters and MACs (and the closed forms), no timing, and the object says
    the speed was not measured instead of holding a rate."""
    net = tiny_net()
    full = model_cost(net, 16, repeats=1)
    monkeypatch.setattr(cost_module, "images_per_second", no_timing)
    quick = model_cost(net, 16, speed=False)
    assert quick["params"] == full["params"] == (3 * 9 * 8 + 8) + (8 * 256 * 5 + 5)
    assert quick["macs"] == full["macs"] == 8 * 16 * 16 * 27 + 2048 * 5
    assert quick["images_per_s"] is None and "not measured" in quick["speed"]
    assert "not measured" not in full["speed"]


def test_cli_no_speed_on_the_demo_config(capsys, tmp_path, monkeypatch):
    """``--no-speed`` through the CLI: the full mode's counts, no timing, the text and JSON say so, no rate of 0."""
    monkeypatch.chdir(tmp_path)
    args = [str(CONFIG), "--data.init_args.num_workers=0"]
    assert main([*args, "--json", "--repeats", "1"]) == 0
    full = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    monkeypatch.setattr(cost_module, "images_per_second", no_timing)
    args.append("--no-speed")
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "images/s       not measured (--no-speed)" in text and " at batch " not in text
    assert main([*args, "--json"]) == 0
    cost = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert cost["images_per_s"] is None and cost["speed"] == "not measured (--no-speed)"
    assert (cost["params"], cost["macs"]) == (full["params"], full["macs"]) and full["images_per_s"] is not None


def test_a_model_working_outside_torch_has_no_counts_but_a_speed():
    """A peer whose work torch cannot see (dlib's trees) gets params and MACs None (a "—" in tables), never the 0
    that counting its empty torch shell would give; its speed is measured like any model's."""
    net = tiny_net()
    net.cost_outside_torch = "runs outside torch"
    cost = model_cost(net, 16, repeats=1)
    assert cost["params"] is None and cost["macs"] is None and cost["not_counted"] == "runs outside torch"
    assert all(v > 0 for v in cost["images_per_s"].values())
    from leaderboard.board import cost_numbers
    numbers = cost_numbers({"cost": cost})
    assert numbers["params_m"] != numbers["params_m"] and numbers["macs_g"] != numbers["macs_g"]  # NaN: "—"
