"""The stage interface: a stage takes the request state and its experiment's typed arguments, returns a new state."""

from __future__ import annotations

from typing import Protocol

from services.search.config.model import StageArgs
from services.search.ports import Deps
from services.search.state import State


class Stage(Protocol):
    async def run(self, state: State, args: StageArgs, deps: Deps) -> State: ...
