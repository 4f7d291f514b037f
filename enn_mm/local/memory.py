"""Count the activations autograd keeps for backward, on any device."""
from torch.autograd.graph import saved_tensors_hooks

__all__ = ['SavedTensorMeter']


class _Saved:
    """A tensor saved for backward; its bytes count until the graph frees it."""
    __slots__ = ('tensor', 'nbytes', 'meter')

    def __init__(self, tensor, meter):
        self.tensor, self.meter = tensor, meter
        self.nbytes = tensor.numel() * tensor.element_size()
        meter.live += self.nbytes
        meter.peak = max(meter.peak, meter.live)

    def __del__(self):
        self.meter.live -= self.nbytes


class SavedTensorMeter(saved_tensors_hooks):
    """Context manager: peak bytes of tensors saved for backward.

    Every tensor an autograd graph saves is counted from its forward until the
    graph is freed (by backward, or when the graph is dropped). Parameters and
    views are counted each time they are saved, so this is an upper bound on
    the activation memory that backward needs, not an allocator reading. It
    works the same on CPU and GPU::

        with SavedTensorMeter() as meter:
            model.train_step(data, optim_wrapper)
        print(meter.peak)
    """

    def __init__(self):
        self.live = 0
        self.peak = 0
        super().__init__(lambda t: _Saved(t, self), lambda s: s.tensor)

    def __enter__(self) -> 'SavedTensorMeter':
        super().__enter__()
        return self
