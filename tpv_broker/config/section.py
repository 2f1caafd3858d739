"""The base of every configuration section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    # A typo in config.yaml must fail start-up, not be silently ignored;
    # so must .inf or .nan: no setting means them, and they failed later
    # (every rank answer a 500, every collector cycle an OverflowError).
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
