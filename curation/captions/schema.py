"""Structured responses of the captioning model (pydantic), sent to the backends as the output schema."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Character(BaseModel):
    """One character of the scene, described once and referred to by ``id`` in every shot."""

    id: str = Field(description="Short id such as C1, C2; captions refer to the character as {C1}.")
    label: str = Field(description="Short label, e.g. 'young woman', 'old fisherman'.")
    clothing: str = Field(description="Visible clothing and accessories.")
    hair: str = Field(description="Hair colour, length and style (or 'bald', 'hidden').")
    age: str = Field(description="Apparent age range, e.g. 'in her twenties'.")
    distinguishing_features: str = Field("", description="Glasses, beard, scars, build; empty if none.")


class Setting(BaseModel):
    place: str = Field(description="Where the scene happens.")
    time_of_day: str = Field(description="Day, night, dusk, ... or 'unknown'.")
    lighting: str = Field(description="Lighting, e.g. 'warm tungsten interior light'.")
    style: str = Field(description="Visual style, e.g. 'live-action film, shallow depth of field'.")


class ShotCaption(BaseModel):
    shot: int = Field(description="Index of the shot in the request, from 0.")
    caption: str = Field(description="What happens in the shot; characters only as {C1}, {C2}, ...")
    characters: list[str] = Field(default_factory=list, description="Ids of the characters visible in the shot.")
    shot_type: str = Field(description="extreme close-up, close-up, medium, wide, ...")
    camera_movement: str = Field(description="static, pan, tilt, dolly, tracking, handheld, zoom, ...")


class SceneCaptions(BaseModel):
    """The answer to one group-caption request: registry, setting, one caption per shot."""

    characters: list[Character] = Field(default_factory=list)
    setting: Setting
    shots: list[ShotCaption]


class Problem(BaseModel):
    kind: Literal["vague", "hallucination", "wrong-character", "missing-action", "other"]
    detail: str = Field(description="The phrase or object concerned.")


class ShotVerdict(BaseModel):
    shot: int = Field(description="Index of the shot in the request, from 0.")
    verdict: Literal["accurate", "fixed", "wrong"] = Field(
        description="accurate: keep; fixed: refined_caption replaces it; wrong: the caption cannot be fixed."
    )
    problems: list[Problem] = Field(default_factory=list)
    refined_caption: str = Field("", description="With verdict 'fixed': the corrected caption, ids as {C1}.")


class SceneVerification(BaseModel):
    """The answer to one verification request: one verdict per shot sent."""

    shots: list[ShotVerdict]
