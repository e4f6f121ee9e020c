"""Small torch models for horizontal credit scoring, and their parameters as numpy arrays.

Every model outputs one logit per row (the log-odds of default). Only layers Opacus can compute
per-sample gradients for are used (``Linear``, ``ReLU``, ``Tanh``; no ``BatchNorm``, whose batch
statistics mix records and break per-record DP).

Parameters travel between a bank and the aggregator as a list of numpy arrays in
``state_dict`` order (:func:`parameters_to_arrays` / :func:`arrays_to_parameters`). A model
wrapped by Opacus (``GradSampleModule``, whose keys carry a ``_module.`` prefix) gives the same
list, in the same order and shapes, as the plain model it wraps.

What the aggregator learns from the arrays: the model itself (after DP-SGD, a differentially
private function of each bank's records; without DP, nothing is guaranteed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from models.horizontal.errors import ModelSpecError, ParameterMismatchError

ModelKind = Literal["logreg", "mlp"]
Activation = Literal["relu", "tanh"]

MODEL_KINDS: tuple[ModelKind, ...] = ("logreg", "mlp")
ACTIVATIONS: tuple[Activation, ...] = ("relu", "tanh")

#: Hidden layer sizes of the default MLP (the issue's reference network, MLP(32, 16)).
DEFAULT_HIDDEN: tuple[int, ...] = (32, 16)


def build_model(
    kind: ModelKind,
    n_inputs: int,
    hidden: tuple[int, ...] = DEFAULT_HIDDEN,
    seed: int = 0,
    *,
    activation: Activation = "relu",
) -> nn.Module:
    """Build a scoring network that outputs one logit per row.

    Parameters
    ----------
    kind : {"logreg", "mlp"}
        ``logreg``: one ``Linear(n_inputs, 1)`` layer (logistic regression). ``mlp``: ``Linear``
        layers of sizes ``hidden`` with ``activation`` between them, then ``Linear(., 1)``.
    n_inputs : int
        Width of the encoded feature matrix (:attr:`FeatureEncoder.n_outputs`).
    hidden : tuple of int
        Hidden layer sizes (``mlp`` only; ignored for ``logreg``).
    seed : int
        Seeds the initial weights through a private ``torch.Generator``, so every bank and the
        aggregator can build the same initial model without touching torch's global RNG.
    activation : {"relu", "tanh"}
        Nonlinearity of the MLP. ``tanh`` is bounded, which Papernot et al. (2021, "Tempered
        sigmoid activations for deep learning with differential privacy") found to train
        better under DP-SGD.

    Returns
    -------
    torch.nn.Module
        A ``torch.nn.Sequential`` of float32 layers mapping ``(batch, n_inputs)`` to
        ``(batch, 1)``.

    Raises
    ------
    ModelSpecError
        If ``kind`` or ``activation`` is unknown, ``n_inputs`` < 1 or a hidden size < 1.
    """
    if kind not in MODEL_KINDS:
        raise ModelSpecError(f"unknown model kind {kind!r}; use one of {MODEL_KINDS}")
    if activation not in ACTIVATIONS:
        raise ModelSpecError(f"unknown activation {activation!r}; use one of {ACTIVATIONS}")
    if isinstance(n_inputs, bool) or not isinstance(n_inputs, int) or n_inputs < 1:
        raise ModelSpecError(f"n_inputs must be a positive integer, got {n_inputs!r}")
    sizes = () if kind == "logreg" else tuple(hidden)
    if kind == "mlp" and not sizes:
        raise ModelSpecError("an mlp needs at least one hidden layer; pass e.g. hidden=(32, 16)")
    bad = [h for h in sizes if isinstance(h, bool) or not isinstance(h, int) or h < 1]
    if bad:
        raise ModelSpecError(f"hidden sizes must be positive integers, got {hidden!r}")

    layers: list[nn.Module] = []
    width = n_inputs
    for size in sizes:
        layers.append(_linear(width, size))
        layers.append(nn.ReLU() if activation == "relu" else nn.Tanh())
        width = size
    layers.append(_linear(width, 1))
    model = nn.Sequential(*layers)
    _initialise(model, seed)
    return model


def _linear(n_in: int, n_out: int) -> nn.Linear:
    """An uninitialised ``Linear`` (made on the meta device: no draw from torch's global RNG)."""
    return nn.Linear(n_in, n_out, device="meta").to_empty(device="cpu")


def _initialise(model: nn.Module, seed: int) -> None:
    """Draw torch's default ``Linear`` initialisation from a private generator."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, nn.Linear):
                # torch's own default: kaiming_uniform(a=sqrt(5)) and U(-1/sqrt(fan_in), ...).
                nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
                bound = 1.0 / math.sqrt(layer.in_features)
                nn.init.uniform_(layer.bias, -bound, bound, generator=generator)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside Opacus wrappers (``GradSampleModule`` and the like).

    Opacus wrappers keep the wrapped module in ``_module``; the parameters are shared, so
    training through the wrapper updates the plain module.
    """
    inner = model
    while True:
        wrapped = getattr(inner, "_module", None)
        if not isinstance(wrapped, nn.Module):
            return inner
        inner = wrapped


def parameter_names(model: nn.Module) -> list[str]:
    """``state_dict`` keys of the plain (unwrapped) model: the order of the array list."""
    return list(unwrap(model).state_dict().keys())


def parameters_to_arrays(model: nn.Module) -> list[npt.NDArray[np.float32]]:
    """Copy the model's ``state_dict`` into float32 numpy arrays, in ``state_dict`` order.

    The same list (order, shapes) is returned for a model and for its Opacus wrapper.
    """
    return [
        np.array(tensor.detach().cpu().numpy(), dtype=np.float32, copy=True)
        for tensor in unwrap(model).state_dict().values()
    ]


def arrays_to_parameters(model: nn.Module, arrays: Sequence[npt.ArrayLike]) -> None:
    """Copy arrays (from :func:`parameters_to_arrays`) into the model's tensors, in place.

    The model's parameter objects are kept (only their values change), so a model wrapped by
    Opacus or referenced by an optimizer sees the new values.

    Raises
    ------
    ParameterMismatchError
        If the number of arrays or a shape differs from the model's, or a value is not finite.
    """
    state = unwrap(model).state_dict()
    if len(arrays) != len(state):
        raise ParameterMismatchError(
            f"got {len(arrays)} arrays for a model with {len(state)} tensors "
            f"({list(state)}); send the arrays of a model built with the same kind and sizes"
        )
    converted = []
    for (name, tensor), raw in zip(state.items(), arrays, strict=True):
        array = np.asarray(raw)
        if tuple(array.shape) != tuple(tensor.shape):
            raise ParameterMismatchError(
                f"array for {name!r} has shape {tuple(array.shape)}, the model expects "
                f"{tuple(tensor.shape)}; build the model with the job's kind, inputs and hidden"
            )
        if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
            raise ParameterMismatchError(
                f"array for {name!r} holds non-numeric or non-finite values; the update is "
                "corrupt (diverged training?) and must not be loaded"
            )
        converted.append(torch.as_tensor(array, dtype=tensor.dtype))
    with torch.no_grad():
        for tensor, value in zip(state.values(), converted, strict=True):
            tensor.copy_(value)


def n_parameters(model: nn.Module) -> int:
    """Number of scalar values in the model's ``state_dict`` (what one update carries)."""
    return sum(int(t.numel()) for t in unwrap(model).state_dict().values())
