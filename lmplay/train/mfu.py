"""Model FLOPs utilisation: the share of the device's peak that the model's own FLOPs use.

MFU = FLOPs per token (forward + backward, from the model's shape, as `--describe` prints) x
tokens per second / peak FLOP/s. Recomputation (activation checkpointing) and padding are not
counted as model FLOPs, so they lower MFU, as they should. The peak is the dense bf16 tensor
figure of the data sheet; on a CPU there is no table, so MFU is reported only with
`--peak-tflops`.
"""

from __future__ import annotations

import torch

# Dense (no sparsity) bf16 tensor-core TFLOP/s by a substring of torch.cuda.get_device_name();
# the longest matching key wins, so "H100 PCIe" is not read as an SXM part.
PEAK_BF16_TFLOPS: dict[str, float] = {
    "B200": 2250.0,
    "GH200": 989.0,
    "H200": 989.0,
    "H100": 989.0,  # SXM
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H800": 989.0,
    "A100": 312.0,
    "A800": 312.0,
    "L40S": 362.0,
    "L40": 181.0,
    "L4": 121.0,
    "A10G": 70.0,
    "A10": 125.0,
    "A6000": 155.0,
    "RTX 6000 Ada": 364.0,
    "RTX 4090": 165.0,
    "RTX 4080": 97.0,
    "RTX 3090": 71.0,
    "V100": 125.0,  # fp16: no bf16 tensor cores
    "T4": 65.0,  # fp16
    "MI300X": 1307.0,
    "MI250X": 383.0,
}


def peak_flops(device: torch.device, override_tflops: float | None = None) -> float | None:
    """Peak FLOP/s of `device`: the override, else the table's entry; None when unknown."""
    if override_tflops is not None:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    return table_peak_flops(torch.cuda.get_device_name(device))


def table_peak_flops(device_name: str) -> float | None:
    matches = [key for key in PEAK_BF16_TFLOPS if key.lower() in device_name.lower()]
    if not matches:
        return None
    return PEAK_BF16_TFLOPS[max(matches, key=len)] * 1e12


def mfu(flops_per_token: float, tokens_per_s: float, peak: float) -> float:
    """Model FLOPs utilisation in [0, 1] (above 1 only if the peak is understated)."""
    return flops_per_token * tokens_per_s / peak
