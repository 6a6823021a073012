"""What FLOPs cost: GPU-hours, energy and CO2, every assumption a named, settable field.

GPU-hours = FLOPs / (peak bf16 dense FLOP/s x MFU) / 3600; energy = GPU-hours x board power
x PUE (the data centre's overhead); CO2 = energy x grid carbon intensity. Defaults are round,
public figures, printed beside every result: change them, don't trust them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, asdict


# Peak dense bf16 FLOP/s by GPU kind (vendor figures; V100 has no bf16: its fp16 tensor peak).
# The one table: the bill (default_gpus), the trainer's MFU (train.device_peak) and a sweep's
# time estimate (sweep.spec) all read it.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "A10G": 125e12, "L4": 121e12, "V100": 125e12}


def peak_bf16(device_name: str) -> float | None:
    """The bf16 peak of a GPU from its name as torch reports it ('NVIDIA H100 80GB HBM3'), or None."""
    return next((peak for key, peak in PEAK_BF16.items() if key in device_name), None)


@dataclass
class GPU:
    name: str
    peak_flops: float       # bf16 dense, FLOP/s
    power_kw: float         # board power under load
    price_per_hour: float   # USD per GPU-hour (cloud on-demand order of magnitude)


def default_gpus() -> dict:
    return {
        "A100": GPU("A100", PEAK_BF16["A100"], 0.40, 2.0),    # A100 SXM 40/80GB: 312 TFLOP/s bf16, 400 W
        "H100": GPU("H100", PEAK_BF16["H100"], 0.70, 4.0),    # H100 SXM: 989 TFLOP/s bf16, 700 W
    }


@dataclass
class CostAssumptions:
    """What a FLOP costs: utilisation in training and serving, the data centre's PUE, the
    grid's carbon, the GPU and its price. Every number of a plan's bill comes from these
    fields; `scaling plan` sets them with flags, a notebook by keyword."""

    mfu: float = 0.40                  # model FLOP utilisation achieved in training
    inference_mfu: float = 0.40        # ... and in serving (often lower: small batches)
    pue: float = 1.1                   # power usage effectiveness of the data centre
    grid_kg_per_kwh: float = 0.385     # grid carbon intensity (about the US average)
    gpus: dict = field(default_factory=default_gpus)

    def to_dict(self) -> dict:
        return asdict(self)

    def gpu_hours(self, flops: float, gpu: str, inference: bool = False) -> float:
        g = self.gpus[gpu]
        return flops / (g.peak_flops * (self.inference_mfu if inference else self.mfu)) / 3600.0

    def bill(self, flops: float, inference: bool = False) -> dict:
        """Per GPU kind: GPU-hours, GPU-days, energy (kWh), CO2 (kg), price (USD)."""
        out = {}
        for name, g in self.gpus.items():
            h = self.gpu_hours(flops, name, inference)
            kwh = h * g.power_kw * self.pue
            out[name] = {"gpu_hours": h, "gpu_days": h / 24.0, "energy_kwh": kwh,
                         "co2_kg": kwh * self.grid_kg_per_kwh, "usd": h * g.price_per_hour}
        return out

    def describe(self) -> str:
        gpus = "; ".join(f"{g.name} {g.peak_flops / 1e12:.0f} TFLOP/s, {g.power_kw * 1000:.0f} W, "
                         f"${g.price_per_hour:g}/h" for g in self.gpus.values())
        return (f"MFU {self.mfu:.0%} (inference {self.inference_mfu:.0%}), PUE {self.pue:g}, "
                f"grid {self.grid_kg_per_kwh:g} kg CO2/kWh; {gpus}")


# AlexaTM 20B as reported (Soltan et al. 2022): 128 A100s for 120 days.
ALEXATM_REPORTED = {"gpus": 128, "gpu": "A100", "days": 120, "gpu_hours": 128 * 120 * 24}


def alexatm_reported(assume: CostAssumptions) -> dict:
    """The reported run under the same assumptions (energy, CO2, and the FLOPs it implies)."""
    g = assume.gpus["A100"]
    h = ALEXATM_REPORTED["gpu_hours"]
    kwh = h * g.power_kw * assume.pue
    return {**ALEXATM_REPORTED, "energy_kwh": kwh, "co2_kg": kwh * assume.grid_kg_per_kwh,
            "usd": h * g.price_per_hour, "implied_flops_at_mfu": h * 3600 * g.peak_flops * assume.mfu}
