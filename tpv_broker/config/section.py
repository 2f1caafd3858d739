"""The base of every configuration section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    # A typo in config.yaml must fail start-up, not be silently ignored.
    model_config = ConfigDict(extra="forbid")
