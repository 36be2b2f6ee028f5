"""Power samples -> energy per inference, for the three counters edgeprune's boards expose.

* Jetson ``tegrastats`` lines: rails in milliwatts as ``NAME cur/avg``. JetPack <= 4.6 prints bare
  numbers (``POM_5V_IN 2345/2400``), JetPack 5/6 adds units (``VDD_IN 5000mW/5000mW``).
* PYNQ ``DataRecorder`` frames saved as CSV: an index of timestamps, a ``Mark`` column and one
  column per sensor named ``<rail>_power`` (W), ``<rail>_voltage`` (V) or ``<rail>_current`` (A).
* Linux RAPL ``energy_uj`` counters (microjoules, wrapping at ``max_energy_range_uj``).

Everything here parses text or numbers that a device produced; nothing samples by itself, so the
same code serves the SSH runner (samples taken on the board) and tests (real-format lines).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np

from edgeprune.errors import DeviceError
from edgeprune.profilers.base import EnergyStats
from edgeprune.registry import Registry

_RAIL = re.compile(r"(?<!\S)([A-Za-z][A-Za-z0-9_]*) (\d+(?:\.\d+)?)(mW)?/(\d+(?:\.\d+)?)(mW)?(?=\s|$)")
"""``NAME cur/avg`` with optional ``mW`` units. Requiring whitespace after the pair keeps
``RAM 1465/3964MB`` and ``SWAP 0/1982MB`` (memory, not power) out."""

RAPL_DOMAIN = Path("/sys/class/powercap/intel-rapl:0")


def parse_tegrastats_line(line: str) -> dict[str, tuple[float, float]]:
    """Rails of one ``tegrastats`` line as ``{name: (current_mw, average_mw)}``.

    Both the old (``POM_5V_IN 2345/2400``) and the new (``VDD_IN 5000mW/5000mW``) formats are
    read; a line with no rails gives an empty dict (tegrastats prints those on some modules).
    """
    return {m.group(1): (float(m.group(2)), float(m.group(4))) for m in _RAIL.finditer(line)}


def tegrastats_power_w(lines: Iterable[str], rail: str) -> list[float]:
    """Instantaneous power of ``rail`` in watts, one value per line that reports it.

    Uses the *current* reading, not tegrastats' running average, because the average also covers
    the time before the benchmark started. Raises :class:`DeviceError` naming the rails that were
    seen when ``rail`` never appears (a wrong rail name in the target YAML is the usual cause).
    """
    seen: set[str] = set()
    power = []
    for line in lines:
        rails = parse_tegrastats_line(line)
        seen.update(rails)
        if rail in rails:
            power.append(rails[rail][0] / 1e3)
    if not power:
        raise DeviceError(
            f"tegrastats reported no rail {rail!r}; rails seen: {', '.join(sorted(seen)) or '(none)'}"
        )
    return power


def pynq_power_w(csv_text: str, rail: str, mark: int | None = None) -> list[float]:
    """Power of ``rail`` in watts from a PYNQ ``DataRecorder.frame.to_csv()`` dump.

    Reads ``<rail>_power``; when the board only has voltage and current sensors on that rail,
    multiplies ``<rail>_voltage`` by ``<rail>_current``. ``mark`` keeps only rows recorded
    under that ``DataRecorder.mark()`` count, so idle time before the benchmark is left out.
    """
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    if not rows:
        raise DeviceError("PYNQ power recording is empty")
    header = rows[0].keys()
    if mark is not None:
        if "Mark" not in header:
            raise DeviceError("PYNQ power recording has no Mark column")
        rows = [r for r in rows if int(float(r["Mark"])) == mark]
    if f"{rail}_power" in header:
        power = [float(r[f"{rail}_power"]) for r in rows]
    elif f"{rail}_voltage" in header and f"{rail}_current" in header:
        power = [float(r[f"{rail}_voltage"]) * float(r[f"{rail}_current"]) for r in rows]
    else:
        rails = sorted({c.rsplit("_", 1)[0] for c in header if "_" in c})
        raise DeviceError(f"PYNQ recording has no rail {rail!r}; rails: {', '.join(rails) or '(none)'}")
    if not power:
        raise DeviceError(f"PYNQ recording has no samples under mark {mark}")
    return power


def rapl_delta_uj(start_uj: int, end_uj: int, max_range_uj: int) -> int:
    """Energy between two ``energy_uj`` readings, allowing for one counter wraparound.

    The counter wraps at ``max_energy_range_uj`` (about 262 kJ on many CPUs: minutes at full load),
    so a long benchmark can see ``end < start``; a negative delta would silently be garbage.
    """
    if not 0 <= start_uj <= max_range_uj or not 0 <= end_uj <= max_range_uj:
        raise ValueError("RAPL readings must lie in [0, max_energy_range_uj]")
    return end_uj - start_uj if end_uj >= start_uj else max_range_uj - start_uj + end_uj


def rapl_power_w(samples: Sequence[tuple[float, int]], max_range_uj: int) -> list[float]:
    """Mean power in watts over each interval of ``(time_s, energy_uj)`` samples."""
    if len(samples) < 2:
        raise ValueError("need at least two RAPL samples")
    power = []
    for (t0, e0), (t1, e1) in pairwise(samples):
        if t1 <= t0:
            raise ValueError("RAPL sample times must increase")
        power.append(rapl_delta_uj(e0, e1, max_range_uj) / 1e6 / (t1 - t0))
    return power


def read_rapl(domain: Path = RAPL_DOMAIN) -> tuple[int, int]:
    """``(energy_uj, max_energy_range_uj)`` of a powercap domain; :class:`DeviceError` if absent."""
    try:
        return int((domain / "energy_uj").read_text()), int((domain / "max_energy_range_uj").read_text())
    except (OSError, ValueError) as exc:
        raise DeviceError(f"RAPL counter {domain} unreadable: {exc.__class__.__name__}") from None


def energy_from_power(power_w: Sequence[float], latency_ms: float, source: str) -> EnergyStats:
    """Energy per inference from power sampled while the model ran back to back.

    W x ms = mJ: the median sampled power times the median latency. This is whole-board (or
    whole-rail) energy, idle draw included, which is what a battery pays.
    """
    arr = np.asarray(power_w, dtype=np.float64)
    if arr.size == 0 or latency_ms <= 0:
        raise ValueError("need power samples and a positive latency")
    return EnergyStats(median_mj=float(np.median(arr) * latency_ms), mean_power_w=float(arr.mean()),
                       source=source)


def energy_from_rapl(start_uj: int, end_uj: int, max_range_uj: int, elapsed_s: float, inferences: int,
                     source: str = "measured:rapl") -> EnergyStats:
    """Energy per inference from RAPL readings taken around ``inferences`` back-to-back runs."""
    if elapsed_s <= 0 or inferences < 1:
        raise ValueError("need a positive duration and at least one inference")
    joules = rapl_delta_uj(start_uj, end_uj, max_range_uj) / 1e6
    return EnergyStats(median_mj=joules * 1e3 / inferences, mean_power_w=joules / elapsed_s, source=source)


# ---------------------------------------------------------------- power methods, by name

@dataclass(frozen=True)
class PowerMethod:
    """How one kind of board reports power: whether it needs a ``rail`` name, and how a raw
    record sampled on the board (see ``ssh_bench.py``) becomes energy per inference."""

    name: str
    needs_rail: bool
    to_energy: Callable[[dict, float], EnergyStats] | None  # None: nothing is sampled ("none")


power_methods: Registry = Registry("power method")


def register_power_method(method: PowerMethod) -> PowerMethod:
    return power_methods.register(method.name)(method)


def _tegrastats(record: dict, median_ms: float) -> EnergyStats:
    watts = tegrastats_power_w(record["lines"], record["rail"])
    return energy_from_power(watts, median_ms, f"measured:tegrastats:{record['rail']}")


def _pynq(record: dict, median_ms: float) -> EnergyStats:
    watts = pynq_power_w(record["csv"], record["rail"])
    return energy_from_power(watts, median_ms, f"measured:pynq-rails:{record['rail']}")


def _rapl(record: dict, median_ms: float) -> EnergyStats:
    return energy_from_rapl(int(record["start_uj"]), int(record["end_uj"]), int(record["max_range_uj"]),
                            float(record["elapsed_s"]), int(record["inferences"]))


register_power_method(PowerMethod("none", needs_rail=False, to_energy=None))
register_power_method(PowerMethod("rapl", needs_rail=False, to_energy=_rapl))
register_power_method(PowerMethod("tegrastats", needs_rail=True, to_energy=_tegrastats))
register_power_method(PowerMethod("pynq-rails", needs_rail=True, to_energy=_pynq))
