"""Running one training job over several processes with PyTorch's ``torch.distributed``:
the process group (``env``), the sharding strategies (``strategies``), the tensors each
rank holds (``state``, ``held``). Models know nothing of this; the loop asks for it."""
