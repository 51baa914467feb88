"""Configuration of group captioning and verification (filled in by the captioning stage)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class CaptionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    backend: Literal["none", "gemini", "openai"] = Field(
        "none", description="Captioning backend; 'none' skips captioning and marks scenes as skipped."
    )


class VerifyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = Field(True, description="Verify each shot's caption with a second request.")
