"""Pydantic models for spec version 1 (the format is in the README, "Spec reference", generated from these models).

These models are the single source of truth for the spec: the validator, `lensframe schema`
(JSON Schema for editors) and the README's spec reference all come from them. View params are
validated separately, per view type, against each view class's own `Params` model (so a plugin
view's params get the same line-numbered errors).
"""
from __future__ import annotations

from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator


MODEL_SCHEMES = ("builtin", "hf", "path")


class Strict(BaseModel):
    """Unknown keys are errors, never silently dropped."""

    model_config = ConfigDict(extra="forbid")


class ModelSpec(Strict):
    source: str = Field(
        description="builtin:smollm2-135m, hf:<id>[@revision] or path:<dir> (relative to the spec)"
    )
    trust_remote_code: bool = Field(
        False, description="allow the model's own code; also needs --trust-remote-code"
    )
    dtype: str = Field("float32", pattern="^(float32|bfloat16|float16)$", description="weights dtype")

    @field_validator("source")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        scheme = v.split(":", 1)[0] if ":" in v else ""
        if scheme not in MODEL_SCHEMES:
            raise ValueError(
                f"unknown model source {v!r}: expected builtin:<name>, hf:<id>[@revision] or path:<dir>"
            )
        return v


class DatasetSpec(Strict):
    source: Optional[str] = Field(
        None,
        description="builtin:fortunes, jsonl:<file>, csv:<file>, txt:<file>, parquet:<file> (relative to the spec), "
        "hf:<folder> (a Hugging Face dataset saved with save_to_disk) or hf:<name>[@revision] (from the local "
        "Hugging Face cache); or give `texts` inline instead",
    )
    texts: Optional[list[str]] = Field(None, description="inline texts, instead of `source`")
    labels: Optional[list[str]] = Field(None, description="inline labels, one per text")
    text: str = Field("text", description="column holding the text (jsonl, csv, parquet, hf)")
    label: Optional[str] = Field(None, description="column holding the label (jsonl, csv, parquet, hf; builtin:fortunes: "
                                 "topic)")
    split: Optional[str] = Field(None, description="hf: only: the split to read (default: train)")
    categories: Optional[list[str]] = Field(
        None, description="builtin:fortunes only: which category files to read"
    )
    limit: Optional[int] = Field(300, ge=1, description="at most this many samples (sampled with `seed`)")
    per_label: Optional[int] = Field(None, ge=1, description="at most this many samples of each label (stratified, before `limit`)")
    max_tokens: int = Field(64, ge=2, le=4096, description="truncate each sample to this many tokens")
    seed: int = Field(0, description="seed of the deterministic sample")


class RunSpec(Strict):
    batch_size: int = Field(8, ge=1, le=1024, description="samples per forward pass")
    threads: Optional[int] = Field(
        None, ge=1, description="torch intra-op threads (default: OMP_NUM_THREADS or 2)"
    )
    probe_max_tokens: int = Field(
        128, ge=2, le=8192, description="typed text (probes, and text extended by a click on a generated "
        "token) is cut to this many tokens, and to the model's context, with a note in the page")
    keep_focus_mb: Union[int, float] = Field(
        256, ge=0, description="keep focus results (attention patterns, neuron activations) of every sample "
        "in the store while they fit this many MB: the dataset pass computes them, and a click reads them "
        "instead of running a forward (0: never)"
    )
    checkpoint_every: Union[int, str] = Field(
        "60s", description="a dataset pass saves its progress in the store this often, as a number of batches "
        "(e.g. 50) or a time (\"60s\", \"5m\"); a killed compute or serve resumes from the last one (0: never)"
    )

    @field_validator("checkpoint_every")
    @classmethod
    def _checkpoint_every(cls, v):
        from ..checkpoint import parse_every

        parse_every(v)  # raises with the accepted forms
        return v


class TemplateProbe(Strict):
    """A probe template: one probe per filler, each put where `{}` stands."""

    template: str = Field(description='a prompt with {} where each filler goes, e.g. "{} is located in the city of"')
    fillers: list[str] = Field(description="the texts put into the template, one probe each")

    @field_validator("template")
    @classmethod
    def _has_slot(cls, v: str) -> str:
        if "{}" not in v:
            raise ValueError("the template has no {} for the fillers to go into")
        return v

    @field_validator("fillers")
    @classmethod
    def _no_empty_filler(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("the template has no fillers: give at least one")
        empty = [i for i, f in enumerate(v) if not f.strip()]
        if empty:
            raise ValueError(f"filler {empty[0] + 1} of {len(v)} is empty")
        return v


class ViewSpec(BaseModel):
    """A view entry before its type is known: `type` plus that type's params (validated later)."""

    model_config = ConfigDict(extra="allow")
    type: str


class SpecV1(Strict):
    lensframe: int = Field(description="spec format version; must be 1")
    title: str = Field("lensframe", description="dashboard title")
    model: Optional[str] = Field(None, description='shorthand for models: {main: {source: ...}}')
    models: Optional[dict[str, ModelSpec]] = Field(None, description="named models")
    dataset: DatasetSpec
    run: RunSpec = Field(default_factory=RunSpec)
    views: dict[str, dict[str, Any]] = Field(description="view id -> {type: ..., params}")
    layout: Optional[str] = Field(
        None, description="CSS grid-template-areas; each name a view id (default: one per row)"
    )
    probes: list[Union[str, TemplateProbe]] = Field(
        default_factory=list, description="texts the dashboard opens with in its probe set (the probes view): "
        'a prompt, or {template: "{} is located in the city of", fillers: [Paris, Rome]}')

    @field_validator("lensframe")
    @classmethod
    def _version(cls, v: int) -> int:
        if v != 1:
            raise ValueError(f"unsupported spec version {v}; this lensframe reads version 1")
        return v
