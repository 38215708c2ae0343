"""Mixed precision on CPU: the training forward pass in bfloat16 (``SOLVER.AMP.ENABLED`` with
``MODEL.DEVICE cpu``).

Detectron2's ``AMPTrainer`` is CUDA only (float16 with a gradient scaler, ``torch.cuda``'s
autocast). On a CPU with native bfloat16 (AVX512-BF16 or AMX) oneDNN runs convolutions and
matrix products in bfloat16: the real-photo recipe trains at 1.0 s/it on 2 cores against 1.44-1.51
in float32 (README "Real photos"). bfloat16 keeps float32's exponent,
so no loss scaling is needed; weights, gradients and the optimizer stay float32 (autocast
casts per operation), and checkpoints are the same float32 files.
"""

from __future__ import annotations

import logging
import time

import torch
from detectron2.engine import SimpleTrainer

logger = logging.getLogger(__name__)


def cpu_has_native_bfloat16() -> bool:
    """True when oneDNN runs bfloat16 natively here; elsewhere it emulates it, slower than
    float32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class CPUAutocastTrainer(SimpleTrainer):
    """SimpleTrainer whose forward pass (the model and its losses) runs under CPU bfloat16
    autocast; the backward pass and the optimizer step run outside it, as PyTorch advises.
    ``run_step`` is Detectron2's ``SimpleTrainer.run_step`` with that one context added."""

    def __init__(self, model, data_loader, optimizer, **kwargs) -> None:
        super().__init__(model, data_loader, optimizer, **kwargs)
        if not cpu_has_native_bfloat16():
            logger.warning("SOLVER.AMP.ENABLED: this CPU has no native bfloat16 (AVX512-BF16 "
                           "or AMX), so mixed precision trains slower than float32 here; "
                           "add SOLVER.AMP.ENABLED False to the command")
        else:
            logger.info("SOLVER.AMP.ENABLED: the forward pass runs in bfloat16 on the CPU")

    def run_step(self) -> None:
        assert self.model.training, "[CPUAutocastTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        if self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss_dict = self.model(data)
            if isinstance(loss_dict, torch.Tensor):
                loss_dict = {"total_loss": loss_dict}
            losses = sum(loss_dict.values())
        if not self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        losses.backward()
        self.after_backward()
        if self.async_write_metrics:
            self.concurrent_executor.submit(self._write_metrics, loss_dict, data_time,
                                            iter=self.iter)
        else:
            self._write_metrics(loss_dict, data_time)
        self.optimizer.step()
