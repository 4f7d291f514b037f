"""Point-to-point messages between neighbouring pipeline stages.

A stage hands the next one its feature at the cut point, the targets and,
when a later objective reads it, the network input: one fixed-size int64
header (dtypes and shapes) and then the tensors, with ``torch.distributed``
``isend``/``irecv`` (gloo on CPU, NCCL on GPU). A sender may run at most
``max_inflight`` messages ahead of its receiver. A neighbour that stops or
hangs ends the wait after ``timeout`` seconds with an error naming it.
"""
import datetime
import re
import time
from typing import List, Optional, Tuple

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ['StageLink', 'comm_device']

_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64]
# int64 slots: ndim, dtype, target ndim, target dtype, 8 + 4 sizes, then the
# network input's ndim (0: not sent), dtype and 6 sizes
_HEADER = 24


def comm_device(device: torch.device) -> torch.device:
    """Where tensors must be to go through the default process group.

    Args:
        device (torch.device): Where the tensors are.

    Returns:
        torch.device: ``device`` with NCCL, else the CPU.
    """
    return device if dist.get_backend() == 'nccl' else torch.device('cpu')


def _first_sentence(error: Exception) -> str:
    # gloo's messages start with a source location and end with advice
    text = re.sub(r'^\[[^\]]*\]\s*', '', str(error).splitlines()[0])
    return text.split('. ')[0].rstrip('.')


class StageLink:
    """The messages of one pipeline stage to and from its neighbours.

    Args:
        stage (int): This rank's stage.
        rank (int): This rank; its neighbours are ``rank ± 1`` (the stages
            of one replica hold consecutive ranks).
        timeout (float): Seconds to wait for a neighbour.
        max_inflight (int): Messages sent ahead of what the next stage has
            received.
    """

    def __init__(self, stage: int, rank: int, timeout: float, max_inflight: int):
        self.stage, self.rank = stage, rank
        self.timeout, self.max_inflight = float(timeout), int(max_inflight)
        self._pending: List[Tuple[list, tuple]] = []

    def _wait(self, work, offset: int, what: str) -> float:
        t = time.perf_counter()
        peer = self.stage + offset
        try:
            done = work.wait(timeout=datetime.timedelta(seconds=self.timeout))
        except RuntimeError as e:
            raise RuntimeError(
                f'ENN-ℓ pipeline stage {self.stage} (rank {self.rank}) could not {what} '
                f'stage {peer} (rank {self.rank + offset}): {_first_sentence(e)}. Stage '
                f'{peer} stopped or hung; see its log. (timeout: {self.timeout:.0f} s)') from None
        if done is False:
            raise TimeoutError(f'ENN-ℓ pipeline stage {self.stage}: stage {peer} sent '
                               f'nothing for {self.timeout:.0f} s.')
        return time.perf_counter() - t

    def send(self, z: Tensor, target: Tensor, image: Optional[Tensor] = None) -> float:
        """Send to the next stage; returns the seconds spent waiting for it.

        The sends are asynchronous; this waits only while more than
        ``max_inflight`` messages are unconfirmed.

        Args:
            z (Tensor): The feature at the cut point (sent detached).
            target (Tensor): Labels or soft scores.
            image (Tensor, optional): The network input, sent when a later
                stage's objective reads it.

        Returns:
            float: Seconds spent waiting.

        Raises:
            RuntimeError: The next stage stopped or hung (a failed or
                timed-out send).
            TimeoutError: A send did not complete within ``timeout``.
        """
        dev = comm_device(z.device)
        z, target = z.detach().to(dev).contiguous(), target.to(dev).contiguous()
        header = torch.zeros(_HEADER, dtype=torch.int64)
        header[:4] = torch.tensor([z.dim(), _DTYPES.index(z.dtype), target.dim(),
                                   _DTYPES.index(target.dtype)])
        header[4:4 + z.dim()] = torch.tensor(z.shape)
        header[12:12 + target.dim()] = torch.tensor(target.shape)
        sent = [z, target]
        if image is not None:  # a later stage's objective reads the network input
            image = image.detach().to(dev).contiguous()
            header[16:18] = torch.tensor([image.dim(), _DTYPES.index(image.dtype)])
            header[18:18 + image.dim()] = torch.tensor(image.shape)
            sent.append(image)
        header = header.to(dev)
        works = [dist.isend(t, self.rank + 1) for t in (header, *sent)]
        self._pending.append((works, (header, *sent)))  # keep the tensors alive
        waited = 0.0
        while len(self._pending) > self.max_inflight:
            waited += self._wait_sent(self._pending.pop(0))
        return waited

    def _wait_sent(self, item) -> float:
        return sum(self._wait(w, 1, 'send to') for w in item[0])

    def flush(self) -> float:
        """Wait until the next stage has received everything sent so far.

        Returns:
            float: Seconds spent waiting.
        """
        waited = 0.0
        while self._pending:
            waited += self._wait_sent(self._pending.pop(0))
        return waited

    def recv(self, device: torch.device):
        """Receive from the previous stage: ``(z, target, image or None,
        seconds waited)``, on ``device``.

        Args:
            device (torch.device): Where the received tensors go.

        Returns:
            tuple: ``(z, target, image, waited)``; ``image`` is None if it was
            not sent, ``waited`` the seconds spent waiting.

        Raises:
            RuntimeError: The previous stage stopped or hung (a failed or
                timed-out receive).
            TimeoutError: A receive did not complete within ``timeout``.
        """
        dev = comm_device(device)
        src = self.rank - 1
        header = torch.empty(_HEADER, dtype=torch.int64, device=dev)
        waited = self._wait(dist.irecv(header, src), -1, 'receive from')
        h = header.cpu().tolist()
        z = torch.empty(h[4:4 + h[0]], dtype=_DTYPES[h[1]], device=dev)
        target = torch.empty(h[12:12 + h[2]], dtype=_DTYPES[h[3]], device=dev)
        waited += self._wait(dist.irecv(z, src), -1, 'receive from')
        waited += self._wait(dist.irecv(target, src), -1, 'receive from')
        image = None
        if h[16]:
            image = torch.empty(h[18:18 + h[16]], dtype=_DTYPES[h[17]], device=dev)
            waited += self._wait(dist.irecv(image, src), -1, 'receive from')
            image = image.to(device)
        return z.to(device), target.to(device), image, waited
