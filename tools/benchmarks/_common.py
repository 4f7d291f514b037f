"""What every benchmark here shares (imported as ``_common`` from the
benchmarks' own folder, which Python puts first on ``sys.path``)."""
import os
import platform
import re
import statistics
import subprocess

__all__ = ['machine_info', 'median_range', 'paired_ratio']

# the instruction sets that change BLAS and conv kernels between our machines
FLAGS = ('avx2', 'avx512f', 'avx512_bf16', 'amx_tile', 'fma')


def machine_info() -> dict:
    """The CPU a benchmark ran on: ``lscpu``'s model name, the kernel-relevant
    flags it has, and the core count (ratios compare only within one run)."""
    info = dict(cpu=platform.processor() or platform.machine(), cpu_flags=[],
                cpus=os.cpu_count())
    try:
        out = subprocess.run(['lscpu'], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return info
    model = re.search(r'^Model name:\s*(.+)$', out, re.M)
    flags = re.search(r'^Flags:\s*(.+)$', out, re.M)
    if model:
        info['cpu'] = model.group(1).strip()
    if flags:
        have = set(flags.group(1).split())
        info['cpu_flags'] = [f for f in FLAGS if f in have]
    return info


def median_range(values, digits: int = 4):
    """Median of ``values`` and their ``[min, max]``, rounded.

    Args:
        values (Iterable[float]): The repeats of one measurement.
        digits (int): Decimals kept. Defaults to 4.

    Returns:
        tuple: ``(median, [min, max])``.
    """
    values = list(values)
    return (round(statistics.median(values), digits),
            [round(min(values), digits), round(max(values), digits)])


def paired_ratio(values, baselines, digits: int = 3):
    """Median and range of the per-repeat ratios ``values[i] / baselines[i]``
    (each repeat against the baseline measured in the same round, so drift
    of a noisy machine cancels).

    Args:
        values (Sequence[float]): One measurement per repeat.
        baselines (Sequence[float]): The baseline of the same repeats.
        digits (int): Decimals kept. Defaults to 3.

    Returns:
        tuple: ``(median ratio, [min ratio, max ratio])``.
    """
    if len(values) != len(baselines) or not len(values):
        raise ValueError(f'paired ratios need as many values as baselines, got '
                         f'{len(values)} and {len(baselines)}')
    return median_range([v / b for v, b in zip(values, baselines)], digits)
