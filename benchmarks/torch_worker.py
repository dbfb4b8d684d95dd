"""PyTorch side of ``benchmarks/vs_pytorch.py``: the same networks, trained eagerly.

Runs under a Python that has PyTorch (CPU wheel is enough; see BENCHMARKS.md), not
the project's venv: it imports only torch and numpy. ``vs_pytorch.py`` starts it as a
subprocess and talks JSON lines over stdin/stdout:

    {"op": "setup", "model": "resnet20", "layout": "channels_last", "precision": "fp32",
     "batch_size": 128, "device": "cpu"}            -> {"ok": true, "seconds": ...}
    {"op": "window", "seconds": 3.0}                   -> {"images_per_second": ..., "steps": ...}
    {"op": "quit"}

A training step is what cnncli's step does: gather a batch of uint8 images from the
in-memory training set by a random permutation, convert and normalize, forward,
cross-entropy, backward, SGD with momentum 0.9. ``precision = "bf16"`` wraps the
forward and loss in ``torch.autocast(dtype=torch.bfloat16)`` (float32 master weights).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class OptionAShortcut(nn.Module):
    """CIFAR ResNet option A: subsample by the stride, zero-pad the channels (half each side)."""

    def __init__(self, in_c: int, out_c: int, stride: int):
        super().__init__()
        self.stride, self.pad = stride, out_c - in_c

    def forward(self, x):
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))


class BasicBlock(nn.Module):
    def __init__(self, in_c: int, out_c: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_c, out_c, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_c)
        self.conv2 = nn.Conv2d(out_c, out_c, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_c)
        self.shortcut = OptionAShortcut(in_c, out_c, stride) if (stride != 1 or in_c != out_c) else nn.Identity()

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


def resnet_cifar(depth: int = 20, num_classes: int = 10) -> nn.Module:
    """He et al. 2016 section 4.2 (option A), as cnncli's zoo ``resnet20``."""
    n = (depth - 2) // 6
    layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    in_c = 16
    for stage, width in enumerate((16, 32, 64)):
        for i in range(n):
            layers.append(BasicBlock(in_c, width, 2 if (i == 0 and stage > 0) else 1))
            in_c = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes)]
    return nn.Sequential(*layers)


def lenet5(num_classes: int = 10) -> nn.Module:
    """cnncli's zoo ``lenet5``: conv6 k5 p2, tanh, avgpool 2, conv16 k5, tanh, avgpool 2, 120, 84."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.Tanh(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.Tanh(), nn.Linear(120, 84), nn.Tanh(),
        nn.Linear(84, num_classes),
    )  # fmt: skip


def cnn2(num_classes: int = 10) -> nn.Module:
    """The issue's 2-conv CNN (``vs_pytorch.MODELS['cnn2']`` tokens)."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, num_classes),
    )  # fmt: skip


MODELS = {"lenet5": (lenet5, (1, 28, 28)), "cnn2": (cnn2, (1, 28, 28)), "resnet20": (resnet_cifar, (3, 32, 32))}


class Trainer:
    def __init__(self, model: str, layout: str, precision: str, batch_size: int, device: str = "cpu", seed: int = 0):
        torch.manual_seed(seed)
        build, (c, h, w) = MODELS[model]
        self.device = torch.device(device)
        self.memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        self.net = build().to(self.device, memory_format=self.memory_format)
        self.net.train()
        self.opt = torch.optim.SGD(self.net.parameters(), lr=0.01, momentum=0.9)
        n = 4 * batch_size
        rng = np.random.default_rng(seed)
        self.x_all = torch.from_numpy(rng.integers(0, 256, (n, c, h, w), dtype=np.uint8)).to(self.device)
        self.y_all = torch.from_numpy(rng.integers(0, 10, (n,), dtype=np.int64)).to(self.device)
        self.batch_size, self.n = batch_size, n
        self.bf16 = precision == "bf16"
        self.steps = 0
        self.perm = torch.randperm(n, device=self.device)

    def step(self) -> None:
        i = self.steps % (self.n // self.batch_size)
        idx = self.perm[i * self.batch_size : (i + 1) * self.batch_size]
        x = (self.x_all[idx].float() - 127.5) / 64.0
        x = x.contiguous(memory_format=self.memory_format)
        y = self.y_all[idx]
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = F.cross_entropy(self.net(x), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.steps += 1

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def window(self, seconds: float, min_steps: int = 3) -> dict:
        self.sync()
        t0 = time.perf_counter()
        steps = 0
        while steps < min_steps or time.perf_counter() - t0 < seconds:
            self.step()
            steps += 1
            if self.device.type == "cuda" and steps % 20 == 0:
                self.sync()
        self.sync()
        dt = time.perf_counter() - t0
        return {"images_per_second": steps * self.batch_size / dt, "steps": steps, "seconds": dt}


def main() -> None:
    trainer = None
    for line in sys.stdin:
        msg = json.loads(line)
        op = msg["op"]
        if op == "quit":
            break
        try:
            if op == "setup":
                t0 = time.perf_counter()
                trainer = Trainer(msg["model"], msg.get("layout", "nchw"), msg.get("precision", "fp32"),
                                  msg.get("batch_size", 128), msg.get("device", "cpu"))  # fmt: skip
                for _ in range(3):  # warm-up: allocator, oneDNN primitive caches
                    trainer.step()
                trainer.sync()
                reply = {"ok": True, "seconds": time.perf_counter() - t0, "torch": torch.__version__,
                         "threads": torch.get_num_threads()}  # fmt: skip
            elif op == "window":
                reply = trainer.window(msg.get("seconds", 3.0))
            else:
                reply = {"error": f"unknown op {op}"}
        except Exception as err:  # report, keep serving
            reply = {"error": f"{type(err).__name__}: {err}"}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
