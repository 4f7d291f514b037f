"""Watch the eigenbasis during training: orthogonality, spectra, NaNs."""
import math
import os.path as osp
from typing import Dict, List, Optional

import torch
from mmengine.dist import master_only
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmpretrain.registry import HOOKS

from ...core import enn_modules, factors
from ...core.ortho import basis_error


def _unwrap(model):
    return model.module if is_model_wrapper(model) else model


def spectrum_stats(model) -> Dict[str, Dict[str, float]]:
    """Per ENN layer: orthogonality error and min/max/condition of |λ|.

    Args:
        model (nn.Module): The (unwrapped) model.

    Returns:
        dict: ``{layer name: dict(ortho_err, lam_min, lam_max, lam_cond)}``;
        ``ortho_err`` is the worse of Q's and P's largest ``|BᵀB − I|``
        entry, ``lam_cond`` is ``lam_max / lam_min`` (inf for a zero
        ``lam_min``).
    """
    stats = {}
    with torch.no_grad():
        for name, module in enn_modules(model):
            Q, lam, P = factors(module)
            mag = lam.detach().float().abs()
            lo, hi = mag.min().item(), mag.max().item()
            stats[name] = dict(ortho_err=max(basis_error(Q), basis_error(P)), lam_min=lo,
                               lam_max=hi, lam_cond=hi / lo if lo > 0 else math.inf)
    return stats


def non_finite_layers(model) -> List[str]:
    """Names of the ENN layers whose Q, λ or P hold a NaN or inf.

    Args:
        model (nn.Module): The (unwrapped) model.

    Returns:
        list[str]: The layer names, in module order; empty if all are finite.
    """
    return [name for name, module in enn_modules(model)
            if not all(torch.isfinite(t).all() for t in factors(module))]


@HOOKS.register_module()
class ENNDiagnosticsHook(Hook):
    """Log orthogonality and spectrum statistics, plot them, stop on NaN.

    Every ``interval`` training iterations it logs the largest and mean
    ``|BᵀB − I|`` over all bases and the spectrum (``|λ|``) range and worst
    condition number over all layers, and writes them to the visualizer
    backends. ``after_train_epoch`` and ``after_run`` it saves
    ``orthogonality.png`` (error over training) and ``spectra.png`` (sorted
    ``|λ|`` per layer, at the start and now) into ``work_dir/enn_diagnostics``.
    A non-finite loss stops training with the names of the layers whose
    factors went NaN/inf, instead of training on silently.

    Args:
        interval (int): Iterations between measurements. Defaults to 100.
        plot (bool): Save the PNG plots. Defaults to True.
        out_dir (str, optional): Where the plots go. Defaults to
            ``{work_dir}/enn_diagnostics``.

    Raises:
        ValueError: ``interval`` is not a positive int.
    """
    priority = 'LOW'

    def __init__(self, interval: int = 100, plot: bool = True,
                 out_dir: Optional[str] = None) -> None:
        if not isinstance(interval, int) or interval <= 0:
            raise ValueError('ENNDiagnosticsHook interval must be a positive int, '
                             f'got {interval!r}')
        self.interval = interval
        self.plot = plot
        self.out_dir = out_dir
        self.history: List[dict] = []
        self.initial_spectra: Dict[str, torch.Tensor] = {}

    def before_train(self, runner) -> None:
        """Record the initial spectra and take the first measurement.

        Args:
            runner (Runner): The runner.

        Raises:
            RuntimeError: The model has no ENN layers, or its factors are
                not finite.
        """
        model = _unwrap(runner.model)
        if not any(True for _ in enn_modules(model)):
            raise RuntimeError('ENNDiagnosticsHook is configured but the model has no ENN '
                               'layers: wrap the model with type=\'ENNModel\' or remove the hook.')
        self.out_dir = self.out_dir or osp.join(runner.work_dir, 'enn_diagnostics')
        self.initial_spectra = self._spectra(model)
        self._measure(runner, step=runner.iter)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        """Stop on a non-finite loss; measure every ``interval`` iterations.

        Args:
            runner (Runner): The runner.
            batch_idx (int): Index of the batch in the epoch.
            data_batch (dict | tuple | list, optional): The batch.
            outputs (dict, optional): The train step's outputs; its
                ``'loss'`` is checked.

        Raises:
            RuntimeError: The loss is NaN or inf (the message names the
                layers with non-finite factors), or a measurement finds
                non-finite factors.
        """
        loss = (outputs or {}).get('loss')
        if isinstance(loss, torch.Tensor):
            loss = loss.detach()
        if loss is not None and not math.isfinite(float(loss)):
            bad = non_finite_layers(_unwrap(runner.model))
            where = (f'non-finite factors in ENN layers: {", ".join(bad)}' if bad else
                     'all ENN factors are finite, so the loss itself diverged')
            raise RuntimeError(f'training loss is {float(loss)} at iteration {runner.iter + 1}; '
                               f'{where}. Lower the learning rate (or basis_lr_mult), or use '
                               "ortho='retract'.")
        if self.every_n_train_iters(runner, self.interval):
            self._measure(runner, step=runner.iter + 1)  # iterations completed

    def after_train_epoch(self, runner) -> None:
        """Save the plots (main process only, if ``plot``).

        Args:
            runner (Runner): The runner.
        """
        self._save_plots(runner)

    def after_run(self, runner) -> None:
        """Save the plots after a run that trained and measured.

        Args:
            runner (Runner): The runner.
        """
        if runner.train_loop is not None and self.history:
            self._save_plots(runner)

    # ------------------------------------------------------------------
    @staticmethod
    def _spectra(model) -> Dict[str, torch.Tensor]:
        return {name: factors(m)[1].detach().float().abs().flatten().sort(descending=True).values
                for name, m in enn_modules(model)}

    def _measure(self, runner, step: int) -> None:
        stats = spectrum_stats(_unwrap(runner.model))
        errs = [s['ortho_err'] for s in stats.values()]
        record = dict(
            iter=step,
            ortho_err_max=max(errs),
            ortho_err_mean=sum(errs) / len(errs),
            lam_min=min(s['lam_min'] for s in stats.values()),
            lam_max=max(s['lam_max'] for s in stats.values()),
            lam_cond_max=max(s['lam_cond'] for s in stats.values()))
        bad = [n for n, s in stats.items()
               if not all(map(math.isfinite, (s['ortho_err'], s['lam_max'])))]
        if bad:
            raise RuntimeError(f'non-finite ENN factors at iteration {step} in layers: '
                               f'{", ".join(bad)}. Lower the learning rate or use '
                               "ortho='retract'.")
        self.history.append(record)
        runner.visualizer.add_scalars({f'enn/{k}': v for k, v in record.items() if k != 'iter'},
                                      step=step)
        runner.logger.info('ENN diagnostics: ' + '  '.join(
            f'{k}: {v:.3e}' for k, v in record.items() if k != 'iter'))

    @master_only
    def _save_plots(self, runner) -> None:
        if not self.plot:
            return
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        from mmengine.utils import mkdir_or_exist
        mkdir_or_exist(self.out_dir)

        its = [r['iter'] for r in self.history]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.semilogy(its, [max(r['ortho_err_max'], 1e-12) for r in self.history],
                    label='max over bases')
        ax.semilogy(its, [max(r['ortho_err_mean'], 1e-12) for r in self.history],
                    label='mean over layers')
        ax.set(xlabel='iteration', ylabel='max |BᵀB − I|', title='Orthogonality error of Q, P')
        ax.grid(True, which='both', alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(osp.join(self.out_dir, 'orthogonality.png'), dpi=120)
        plt.close(fig)

        now = self._spectra(_unwrap(runner.model))
        fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
        cmap = plt.get_cmap('viridis')
        for ax, spectra, title in ((axes[0], self.initial_spectra, 'at start'),
                                   (axes[1], now, f'at iteration {runner.iter}')):
            for i, (name, lam) in enumerate(spectra.items()):
                ax.semilogy(lam.clamp_min(1e-12).numpy(), color=cmap(i / max(len(spectra) - 1, 1)),
                            lw=1, label=name if i in (0, len(spectra) - 1) else None)
            ax.set(xlabel='index (sorted)', title=f'|λ| per layer, {title}')
            ax.grid(True, which='both', alpha=0.3)
        axes[0].set_ylabel('|λ|')
        axes[1].legend(fontsize=7, title='first / last layer')
        fig.tight_layout()
        fig.savefig(osp.join(self.out_dir, 'spectra.png'), dpi=120)
        plt.close(fig)
