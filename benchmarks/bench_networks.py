"""Benchmark: a training step of each segmentation network, as a ratio to the quick profile's U-Net step, same run.

Run from the project root::

    ~/.cache/lesionlib/venv/bin/python benchmarks/bench_networks.py [--steps 8] [--rounds 3] [--threads 1] \
        [--nnunet-plans results/quick/_shared/nnunet/nnUNet_preprocessed/Dataset501_Adult/nnUNetPlans.json]

One step = forward, Dice + cross-entropy loss, backward, Adam step, on a batch of two random single-channel
patches, on the CPU with ``--threads`` torch threads. Networks (the reference first):

* ``unet (quick)``: the quick profile's U-Net (MONAI ``UNet`` 16..256, 2 residual units), 48^3;
* ``resunet (quick)``: the quick profile's Res-U-Net (MedicalNet's geometry, narrow encoder), 48^3;
* ``resunet (MedicalNet width)``: the same decoder on MedicalNet's full-width encoder, 48^3;
* ``resunet (paper size)``: MedicalNet's encoder and the paper-size decoder (256..32), 48^3;
* ``FlexibleUNet resnet10 (replaced)``: the strided Res-U-Net this project used before (MONAI
  ``FlexibleUNet``, output stride 32, decoder 64..8), at the 32^3 patch it was trained with.

Every network runs twice: in PyTorch's default memory layout, and channels-last (``channels-last`` rows), the
layout lesionlib trains and segments in on the CPU (:func:`lesionlib.train.on_device`, and nnU-Net's network in
lesionlib's trainers); ``--nnunet-plans`` adds nnU-Net's ``3d_fullres`` network of those plans (deep supervision,
a plain sum of its outputs as the loss), at the plans' patch size.

Each network runs ``--warmup`` untimed steps, then ``--rounds`` blocks of ``--steps`` timed steps, the
networks taking turns (so that all see the same background load); the median step time over the rounds is
reported with its ratio to the reference, and the forward GFLOP of one batch (``torch.utils.flop_counter``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Callable

import torch
from monai.losses import DiceCELoss
from torch.utils.flop_counter import FlopCounterMode


def _networks() -> dict[str, tuple[Callable[[], torch.nn.Module], int]]:
    from monai.networks.nets import FlexibleUNet

    from lesionlib.models import build_model
    from lesionlib.profile import load_profile

    quick = load_profile("quick")
    unet_kw = dict(quick.method("unet").model)
    res_kw = dict(quick.method("resunet").model)
    decoder = res_kw.get("decoder_channels", (32, 16, 16, 8))
    return {
        "unet (quick)": (lambda: build_model("unet", **unet_kw), 48),
        "resunet (quick)": (lambda: build_model("resunet", **res_kw), 48),
        "resunet (MedicalNet width)": (lambda: build_model("resunet", decoder_channels=decoder), 48),
        "resunet (paper size)": (lambda: build_model("resunet"), 48),
        "FlexibleUNet resnet10 (replaced)": (lambda: FlexibleUNet(1, 2, "resnet10", pretrained=False,
                                                                  decoder_channels=(64, 32, 16, 16, 8),
                                                                  spatial_dims=3), 32),
    }


def _nnunet_network(plans_path: str) -> tuple[Callable[[], torch.nn.Module], int]:
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    with open(plans_path) as fh:
        config = PlansManager(json.load(fh)).get_configuration("3d_fullres")
    size = int(config.patch_size[0])
    return (lambda: get_network_from_plans(config.network_arch_class_name, config.network_arch_init_kwargs,
                                           config.network_arch_init_kwargs_req_import, 1, 2,
                                           deep_supervision=True), size)


class _SumOfOutputs(torch.nn.Module):
    """A stand-in loss for a deep-supervision network: the sum of the means of its outputs."""

    def forward(self, outputs: list[torch.Tensor] | torch.Tensor, _target: torch.Tensor) -> torch.Tensor:
        return sum(o.float().mean() for o in outputs) if isinstance(outputs, (list, tuple)) else outputs.mean()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="write the result here too")
    parser.add_argument("--nnunet-plans", default=None, help="an nnUNetPlans.json: add nnU-Net's 3d_fullres network")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    networks = _networks()
    if args.nnunet_plans:
        networks["nnU-Net 3d_fullres (plans)"] = _nnunet_network(args.nnunet_plans)
    state = {}
    for name, (factory, size) in networks.items():
        for channels_last in (False, True):
            model = factory().train()
            x = torch.randn(2, 1, size, size, size)
            y = (torch.rand(2, 1, size, size, size) > 0.9).long()
            if channels_last:
                model = model.to(memory_format=torch.channels_last_3d)
                x = x.contiguous(memory_format=torch.channels_last_3d)
            with FlopCounterMode(display=False) as counter:
                model(x)
            state[name + (" channels-last" if channels_last else "")] = {
                "model": model, "opt": torch.optim.Adam(model.parameters(), 1e-3), "x": x, "y": y, "size": size,
                "gflop": counter.get_total_flops() / 1e9, "times": [],
                "loss": _SumOfOutputs() if name.startswith("nnU-Net") else loss_fn}

    def step(s: dict) -> None:
        loss = s["loss"](s["model"](s["x"]), s["y"])
        s["opt"].zero_grad(set_to_none=True)
        loss.backward()
        s["opt"].step()

    for s in state.values():
        for _ in range(args.warmup):
            step(s)
    for r in range(args.rounds):
        order = list(state.values()) if r % 2 == 0 else list(reversed(state.values()))
        for s in order:
            start = time.perf_counter()
            for _ in range(args.steps):
                step(s)
            s["times"].append((time.perf_counter() - start) / args.steps)
    reference = statistics.median(next(iter(state.values()))["times"])
    rows = []
    print(f"{'network':48s} {'patch':>6s} {'fwd GFLOP':>10s} {'step s':>8s} {'x U-Net':>8s}")
    for name, s in state.items():
        median = statistics.median(s["times"])
        rows.append({"network": name, "patch": s["size"], "forward_gflop": round(s["gflop"], 2),
                     "step_s": round(median, 4), "ratio_to_unet": round(median / reference, 2)})
        print(f"{name:48s} {s['size']:>5d}³ {s['gflop']:10.1f} {median:8.3f} {median / reference:8.2f}")
    result = {"threads": args.threads, "steps": args.steps, "rounds": args.rounds, "rows": rows}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    return result


if __name__ == "__main__":
    main()
