"""One optimizer state per phase on a single optimizer (the goal-driven schedule, docs/design.md §18).

The paper's SCRUB runs max-steps and min-steps through one optimizer with one state. Its retain passes are long
(the whole retain set), so the momentum a forget pass leaves behind fades early in them. The goal-driven schedule
makes a retain pass as short as the forget steps it repairs, shorter than Adam's first-moment memory
(~1 / (1 - beta1) = 10 steps): with one shared state the forget pass's ascent carries on through the retain pass
(measured with an earlier goal-driven schedule on a fine-tuned MiniLM: retain error 1 % -> 13 % in one retain pass),
and the two objectives' gradients differ in scale (a max-step's is exactly 0 at the start, docs/design.md §14), so
one second-moment estimate fits neither. So each phase keeps its own moments and step count:
`PhaseStates.switch` swaps `optimizer.state` at a phase change, and the state that is set aside travels inside
`optimizer.state_dict()` (torch's state-dict hooks), so that checkpoints, resuming and the trainer's undo snapshots
carry both phases' states without knowing about them.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch

STATE_DICT_KEY = "hf_scrub_phase_states"


class PhaseStates:
    """Keeps the optimizer state of each phase of `optimizer` (a torch optimizer, not accelerate's wrapper); only
    the active phase's is in `optimizer.state`."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.active: str | None = None
        self.set_aside: dict[str, defaultdict[torch.Tensor, dict[str, Any]]] = {}
        optimizer.register_state_dict_post_hook(self._add_to_state_dict)
        optimizer.register_load_state_dict_pre_hook(self._take_from_state_dict)

    def switch(self, phase: str) -> None:
        """Make `phase`'s state the optimizer's (a phase seen for the first time starts with an empty state)."""
        if phase == self.active:
            return
        if self.active is not None:
            self.set_aside[self.active] = self.optimizer.state
        self.optimizer.state = self.set_aside.pop(phase, defaultdict(dict))
        self.active = phase

    def _params(self) -> list[torch.Tensor]:
        return [param for group in self.optimizer.param_groups for param in group["params"]]

    def _add_to_state_dict(self, optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
        index = {id(param): i for i, param in enumerate(self._params())}
        state_dict[STATE_DICT_KEY] = {
            "active": self.active,
            "set_aside": {
                phase: {index[id(param)]: dict(values) for param, values in state.items()}
                for phase, state in self.set_aside.items()
            },
        }
        return state_dict

    def _take_from_state_dict(self, optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
        state_dict = dict(state_dict)
        saved = state_dict.pop(STATE_DICT_KEY, None)
        if saved is not None:
            params = self._params()
            self.active = saved["active"]
            self.set_aside = {
                phase: defaultdict(dict, {params[i]: _placed(values, params[i]) for i, values in state.items()})
                for phase, state in saved["set_aside"].items()
            }
        return state_dict


def _placed(values: dict[str, Any], param: torch.Tensor) -> dict[str, Any]:
    """A parameter's saved state on the parameter's device and, for its moments, in its dtype; `step` stays as
    saved (torch keeps it on CPU unless the optimizer is capturable or fused, and then saves it on the device)."""
    placed = {}
    for key, value in values.items():
        if torch.is_tensor(value) and key != "step":
            value = value.to(param.device, dtype=param.dtype if value.is_floating_point() else value.dtype)
        placed[key] = value
    return placed
