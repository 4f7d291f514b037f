"""Deprecated: the pipeline helpers now live in :mod:`.planning` (probe
record, cost model, timing, split choice) and :mod:`.stage` (running one
stage). This module re-exports them under their old names."""
import warnings

from .planning import (CallRecord, block_costs, local_head_costs, measure_block_times,
                       penalty_period_mean, plan_stages, record_calls, refine_split,
                       training_twin)
from .stage import PROBE_BATCH, StageDone, check_segments, exit_at, model_input, stub_prefix

warnings.warn('enn_mm.local.segment is deprecated: import from enn_mm.local.planning '
              '(planning) or enn_mm.local.stage (running a stage).', DeprecationWarning,
              stacklevel=2)

__all__ = ['CallRecord', 'StageDone', 'record_calls', 'block_costs', 'local_head_costs',
           'measure_block_times', 'training_twin', 'penalty_period_mean', 'plan_stages',
           'refine_split', 'stub_prefix', 'check_segments', 'exit_at', 'model_input',
           'PROBE_BATCH']
