"""Training state that lets a killed run resume exactly: weights, optimiser states, RNG states, counters.

Everything is stored in one safetensors file written atomically, so weights and optimiser state can
never come from different steps. Tensors go into the file body; the non-tensor parts (optimiser
hyperparameters, counters, the run config) go into its JSON metadata. Nothing is unpickled on load.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hybridcap.errors import RunFolderError
from hybridcap.io import load_weights, save_weights

STATE_FORMAT_VERSION = 1


@dataclass
class TrainingState:
    """Counters and config that ``load_training_state`` returns beside the weights it loads in place.

    Attributes:
        counters: JSON values the trainer saved, e.g. epoch, global step, best validation loss.
        config: the run config saved with the state, compared against the new config on resume.
    """

    counters: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


def _split_optimizer_state(name: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    plain_state: dict[str, dict[str, Any]] = {}
    for parameter_index, parameter_state in state_dict["state"].items():
        plain_values: dict[str, Any] = {}
        for key, value in parameter_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{name}.{parameter_index}.{key}"] = value
            else:
                plain_values[key] = value
        plain_state[str(parameter_index)] = plain_values
    return tensors, {"param_groups": state_dict["param_groups"], "state": plain_state}


def save_training_state(
    path: str | os.PathLike[str],
    *,
    modules: Mapping[str, nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    generators: Mapping[str, torch.Generator],
    counters: Mapping[str, Any],
    config: Mapping[str, Any],
) -> None:
    """Write modules, optimisers, random generators, counters and config to one safetensors file.

    ``generators`` are the ``torch.Generator`` objects the trainer draws all its randomness from.
    The global CPU RNG state is stored too, so code that uses it resumes identically.
    """
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            tensors[f"module.{name}.{key}"] = value
    optimizer_metadata = {}
    for name, optimizer in optimizers.items():
        optimizer_tensors, optimizer_metadata[name] = _split_optimizer_state(name, optimizer)
        tensors.update(optimizer_tensors)
    for name, generator in generators.items():
        tensors[f"rng.{name}"] = generator.get_state()
    tensors["rng.torch_cpu_global"] = torch.get_rng_state()
    metadata = {
        "format_version": STATE_FORMAT_VERSION,
        "optimizers": optimizer_metadata,
        "counters": dict(counters),
        "config": dict(config),
    }
    save_weights(path, tensors, metadata)


def load_training_state(
    path: str | os.PathLike[str],
    *,
    modules: Mapping[str, nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    generators: Mapping[str, torch.Generator],
) -> TrainingState:
    """Load a file written by ``save_training_state`` into the given objects, in place.

    Tensors are moved to each module's and generator's device. Raises RunFolderError when the file
    is missing, unreadable, or does not match the modules (a run made with another config).
    """
    tensors, metadata = load_weights(path)
    if metadata.get("format_version") != STATE_FORMAT_VERSION:
        raise RunFolderError(f"{path} has training-state format {metadata.get('format_version')!r}, expected {STATE_FORMAT_VERSION}")

    for name, module in modules.items():
        prefix = f"module.{name}."
        module_state = {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}
        try:
            module.load_state_dict(module_state, strict=True)
        except RuntimeError as error:
            first_line = str(error).strip().splitlines()[0]
            raise RunFolderError(f"{path} does not match the {name} network ({first_line}); use --fresh to start over") from error

    for name, optimizer in optimizers.items():
        saved = metadata["optimizers"].get(name)
        if saved is None:
            raise RunFolderError(f"{path} has no state for optimiser {name!r}; use --fresh to start over")
        state: dict[int, dict[str, Any]] = {}
        for parameter_index, plain_values in saved["state"].items():
            parameter_state = dict(plain_values)
            prefix = f"optimizer.{name}.{parameter_index}."
            for key, value in tensors.items():
                if key.startswith(prefix):
                    parameter_state[key[len(prefix):]] = value
            state[int(parameter_index)] = parameter_state
        # JSON turns tuples such as Adam's betas into lists; restore them so the groups compare equal.
        param_groups = [{key: tuple(value) if key == "betas" else value for key, value in group.items()} for group in saved["param_groups"]]
        optimizer.load_state_dict({"state": state, "param_groups": param_groups})

    for name, generator in generators.items():
        key = f"rng.{name}"
        if key not in tensors:
            raise RunFolderError(f"{path} has no random state {name!r}; use --fresh to start over")
        generator.set_state(tensors[key])
    torch.set_rng_state(tensors["rng.torch_cpu_global"])
    return TrainingState(counters=dict(metadata.get("counters", {})), config=dict(metadata.get("config", {})))


def describe_config_difference(saved: Mapping[str, Any], current: Mapping[str, Any], keys: list[str]) -> str | None:
    """Return a short description of the first differing key among ``keys``, or None when they match."""
    for key in keys:
        if json.dumps(saved.get(key)) != json.dumps(current.get(key)):
            return f"{key} is {saved.get(key)!r} in the saved run but {current.get(key)!r} now"
    return None
