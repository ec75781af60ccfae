"""Cost of a model: parameters, MACs per image and inference throughput, for the leaderboard's cost columns.

    python -m leaderboard.cost experiments/hourglass/synthetic.yaml [--json] [--repeats 10] [--no-speed]

MACs come from ``torch.utils.flop_counter.FlopCounterMode`` on one forward pass of one image at the
config's input size: it counts FLOPs of matrix multiplies and convolutions (2 per multiply-accumulate), so
MACs = FLOPs / 2; element-wise operations (activations, normalisation) are not counted, as is usual for the
MACs papers report. Throughput is the median of ``repeats`` timed forward passes (eval mode, no gradients,
after warm-up) at batch 1 and 32 on the current device (CUDA when available, else CPU). ``--no-speed`` counts
parameters and MACs only: timing a 4-stack hourglass at 256 px takes minutes on a CPU, counting takes one pass.
The object then says so (``images_per_s`` null, ``speed`` "not measured") instead of a rate of 0.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

BATCHES = (1, 32)
NOT_MEASURED = "not measured (--no-speed)"


def count_parameters(model: torch.nn.Module) -> int:
    """Every parameter, trainable or not (a frozen stem still costs memory and MACs)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: torch.nn.Module, input_size: int, device: torch.device | str = "cpu") -> int:
    """Multiply-accumulates of one forward pass of one (3, input_size, input_size) image."""
    x = torch.zeros(1, 3, input_size, input_size, device=device)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() // 2


def images_per_second(model: torch.nn.Module, input_size: int, batch: int, repeats: int = 10,
                      device: torch.device | str = "cpu") -> float:
    """Median forward throughput at ``batch`` (eval mode, no gradients, synchronised on CUDA)."""
    x = torch.randn(batch, 3, input_size, input_size, device=device)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    times = []
    with torch.no_grad():
        for i in range(repeats + 2):  # two warm-up passes
            sync()
            start = time.perf_counter()
            model(x)
            sync()
            if i >= 2:
                times.append(time.perf_counter() - start)
    return batch / sorted(times)[len(times) // 2]


def model_cost(model: torch.nn.Module, input_size: int, repeats: int = 10,
               device: torch.device | str | None = None, speed: bool = True) -> dict:
    """``params``, ``macs`` (per image), ``images_per_s`` ({batch: images/s}) and where it was measured.

    ``speed=False`` skips the timing: ``images_per_s`` is None and ``speed`` says it was not measured, so that
    a table shows a missing value, never a rate of 0.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model.to(device).eval()
    rates = {str(b): images_per_second(model, input_size, b, repeats, device) for b in BATCHES} if speed else None
    # A model that works outside torch (a pretrained peer such as dlib's trees) has nothing torch can count:
    # its parameters and MACs are unknown (None, a "—" in tables), never 0. Its speed is still measured.
    outside = getattr(model, "cost_outside_torch", None)
    return {
        "params": None if outside else count_parameters(model),
        "macs": None if outside else count_macs(model, input_size, device),
        **({"not_counted": outside} if outside else {}),
        "images_per_s": rates,
        "speed": f"median of {repeats} timed forward passes" if speed else NOT_MEASURED,
        "input_size": input_size,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "macs_rule": "FlopCounterMode FLOPs / 2 (matmul and convolution only)",
    }


def config_cost(config: str, repeats: int = 10, overrides: list[str] | None = None, speed: bool = True) -> dict:
    """The cost of the model a LightningCLI config builds (its input size linked from the data)."""
    from experiments.cli import main as cli_main

    cli = cli_main(["--config", config, *(overrides or [])], run=False)
    return {"config": config, "model": type(cli.model).__name__} | model_cost(cli.model, cli.model.input_size,
                                                                              repeats, speed=speed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leaderboard.cost", description=__doc__.splitlines()[0])
    parser.add_argument("config", help="a LightningCLI experiment config")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--repeats", type=int, default=10, help="timed forward passes per batch size")
    parser.add_argument("--no-speed", action="store_true", help="parameters and MACs only, no timing")
    args, overrides = parser.parse_known_args(argv)
    cost = config_cost(args.config, args.repeats, overrides, speed=not args.no_speed)
    if args.json:
        print(json.dumps(cost))
        return 0
    print(f"{cost['model']} ({args.config}), {cost['input_size']} px input, on {cost['device']}")
    if cost["params"] is None:
        print(f"  parameters     not counted ({cost['not_counted']})")
    else:
        print(f"  parameters     {cost['params'] / 1e6:.3f} M")
        print(f"  MACs / image   {cost['macs'] / 1e9:.3f} G   ({cost['macs_rule']})")
    for batch, rate in (cost["images_per_s"] or {}).items():
        print(f"  images/s       {rate:.1f} at batch {batch}")
    if cost["images_per_s"] is None:
        print(f"  images/s       {cost['speed']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
