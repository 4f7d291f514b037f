from .enn_diagnostics_hook import ENNDiagnosticsHook

__all__ = ['ENNDiagnosticsHook']
