"""What every benchmark here shares (imported as ``_common`` from the
benchmarks' own folder, which Python puts first on ``sys.path``)."""
import os
import platform
import re
import subprocess

__all__ = ['machine_info']

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
