"""How a run's model is laid out over its processes (`strategy = "fsdp"`) and what each block
keeps for the backward (`activation_checkpointing`).

FSDP2 (`fully_shard`) per Transformer block, then the root (embeddings, final norms): each
process holds 1/W of the weights, gradients and AdamW state, and gathers one block's weights
at a time. Lightning's ModelParallelStrategy starts the processes and the device mesh, and
calls EncoderDecoderModule.configure_model, which calls `shard` here. The parameter names
stay the model's own (no wrapper modules), so kept weights and checkpoints name them as a
DDP run does.
"""

from __future__ import annotations

import functools
import warnings

import torch
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method
from torch.utils.checkpoint import checkpoint

from scaling.base.config import TrainConfig
from scaling.train.model import DecoderOnly, EncoderDecoder


def configure(model: EncoderDecoder, cfg: TrainConfig, precision: str, mesh):
    """EncoderDecoderModule.configure_model: what the config asks of the model's layout, once.
    Returns the loss function a step calls (a sharded model's gathers the root's weights)."""
    if cfg.activation_checkpointing:
        checkpoint_blocks(model)
    if cfg.strategy == "fsdp" and not is_sharded(model):
        shard(model, mesh["data_parallel"], bf16=str(precision).startswith("bf16"))
    return model.token_losses


def blocks(model: EncoderDecoder | DecoderOnly) -> list[torch.nn.Module]:
    """The Transformer blocks, FSDP's units: the encoder's then the decoder's layers, or a
    decoder-only model's layers (`arch = "decoder"`, scaling/train/model.py)."""
    if isinstance(model, DecoderOnly):
        return list(model.layers)
    return [*model.enc_layers, *model.dec_layers]


def checkpoint_blocks(model: EncoderDecoder) -> None:
    """Each block recomputes its activations in the backward instead of keeping them: memory
    for one block's activations rather than all of them, for about one more forward. The
    block's forward is replaced on the instance (not wrapped in another module), so the
    parameter names, and with them checkpoints and kept weights, do not change."""
    for block in blocks(model):
        if not getattr(block, "recomputes", False):
            block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)
            block.recomputes = True


def shard(model: EncoderDecoder, mesh, bf16: bool) -> None:
    """FSDP2 over `mesh` (1-D: the data-parallel processes), one unit per block and one for the
    rest. Under bf16-mixed the gathered weights are bf16 and the gradients are reduced in
    fp32 (the shards, and AdamW, stay fp32)."""
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 \
        else MixedPrecisionPolicy()
    for block in blocks(model):
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    # The step and validation call token_losses, not forward: the root's weights (embeddings,
    # norms) are gathered around it as around a forward.
    register_fsdp_forward_method(model, "token_losses")
    # token_losses returns a view (loss.view(labels.shape)); FSDP2 warns that an in-place op
    # on it would skip its hook. The step only reads it (sum, product), never in place.
    warnings.filterwarnings("ignore", message=".*returned a view tensor.*")


def is_sharded(model: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def full_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights on the CPU, gathered from every process (a collective: every
    rank calls it; rank 0 gets the tensors, the others an empty dict)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def local_norm(norm: torch.Tensor) -> torch.Tensor:
    """A gradient norm as a plain tensor: over sharded gradients it is a DTensor of partial
    sums, reduced over the processes here (on the device, no host sync)."""
    from torch.distributed.tensor import DTensor

    return norm.full_tensor() if isinstance(norm, DTensor) else norm
