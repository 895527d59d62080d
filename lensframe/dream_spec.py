"""What a dream is asked to do, as plain data a view and the command line can import without the
computation (lensframe.ops.dream): the target, the settings with their one set of defaults, and the
checks of both against a model's shapes.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, Optional

@dataclass(frozen=True)
class DreamTarget:
    """What to maximise, measured at `position` of the input (negative counts from the end).

    neuron:    mlp_post.{layer}[position, index]            (the neuron's activation)
    direction: resid_post.{layer}[position] · d / |d|        (d = `direction`, length d_model)
    logit:     log_softmax(logits[position])[index]          (the token's log-probability: a logit
                                                             normalised by the others, so raising it
                                                             cannot be done by inflating all logits)
    logit_diff: log p_model(index) − log p_other(index) at position (two models, one soft input)
    kl:        KL(P_model ‖ P_other) of the next-token distributions at position
    edit_direction: mlp_post.{layer}[position] · d / |d|     (d over the layer's neurons, length d_mlp:
                                                             ΔW's top input direction of the MLP output
                                                             matrix, lensframe.weight_directions, or
                                                             any direction given)

    `other` names the reference model: needed at run time by logit_diff and kl; for edit_direction
    it records which base the direction came from (None: a direction given without a base).
    `sign` (direction, edit_direction): −1 raises the opposite side, −k · d / |d|. An SVD direction's
    sign is a convention (lensframe.weight_directions), so the input that fires an edit may lie on
    either side.
    """

    kind: Literal["neuron", "direction", "logit", "logit_diff", "kl", "edit_direction"]
    layer: Optional[int] = None
    index: Optional[int] = None  # neuron index (neuron) or token id (logit, logit_diff)
    position: int = -1
    direction: Optional[tuple] = None
    other: Optional[str] = None
    sign: int = 1

    @property
    def two_models(self) -> bool:
        """Whether each step runs the reference model too."""
        return self.kind in TWO_MODEL_KINDS

    def label(self, model: str | None = None, token: str | None = None) -> str:
        """What is raised, in words; `model` and `token` (the token's text) name them when known."""
        at = "" if self.position == -1 else f" at position {self.position}"
        me, tok = model or "model", repr(token) if token is not None else f"token {self.index}"
        if self.kind == "neuron":
            return f"neuron L{self.layer}/N{self.index}{at}"  # as the views write it: not the number 7.808
        if self.kind == "logit":
            return f"log-prob of {tok}{at}"
        if self.kind == "logit_diff":
            return f"log p({me}) − log p({self.other}) of {tok}{at}"
        if self.kind == "kl":
            return f"KL({me} ‖ {self.other}) of the next token{at}"
        side = "−" if self.sign < 0 else ""
        if self.kind == "edit_direction":
            whence = f"ΔW's top input direction ({self.other} → {me})" if self.other else "a given direction"
            return f"layer {self.layer} MLP neurons along {side}{whence}{at}"
        return f"residual {side}direction after layer {self.layer}{at}"

    def to_json(self) -> dict:
        d = asdict(self)
        d["direction"] = None if self.direction is None else [float(x) for x in self.direction]
        for name, default in (("other", None), ("sign", 1)):  # so that older targets keep their store keys
            if d[name] == default:
                del d[name]
        return d


TWO_MODEL_KINDS = ("logit_diff", "kl")


@dataclass(frozen=True)
class DreamSettings:
    """The one definition of a dream's settings and their defaults: the dream view's params, the
    `lensframe dream` options and Board.dream take theirs from here. Adam lr 0.1; T from 2.0, after
    200 warm-up steps × 0.9995 per step, down to 0.1 (docs/METHODS.md; reaching the floor takes about
    6,200 steps, more than the 500 steps a run makes by default: a run can be continued)."""

    steps: int = 500
    lr: float = 0.1
    temp_start: float = 2.0
    warmup: int = 200
    decay: float = 0.9995
    temp_floor: float = 0.1
    gumbel: bool = False  # add Gumbel noise to Z before the softmax (Gumbel-softmax sampling)
    seed: int = 0
    # Z starts at init_prob's logit on the start token: softmax(Z / temp_start) then gives the start
    # token probability init_prob. (A raw one-hot would give it e^(1/T)/V: the start would be lost.)
    init_prob: float = 0.9

    def temperature(self, step: int) -> float:
        """T at optimisation step `step` (0-based)."""
        return max(self.temp_floor, self.temp_start * self.decay ** max(0, step - self.warmup))


def check_dream(info, target: DreamTarget, settings: DreamSettings, span: int, prefix: int = 0,
                other=None) -> list[tuple[str, str | None]]:
    """(message, hint) for a dream that cannot run on a model with `info` (and the reference model
    with `other`, a ModelInfo, for two-model targets), before either loads."""
    issues = []
    if target.kind in ("neuron", "direction", "edit_direction"):
        if target.layer is None or not 0 <= target.layer < info.n_layers:
            issues.append((f"layer {target.layer} is beyond the model's depth ({info.n_layers} layers: "
                           f"0..{info.n_layers - 1})", None))
    if target.kind == "neuron" and (target.index is None or not 0 <= target.index < info.d_mlp):
        issues.append((f"neuron {target.index} is out of range ({info.d_mlp} neurons per layer: 0..{info.d_mlp - 1})", None))
    if target.kind in ("logit", "logit_diff"):
        if target.index is None or not 0 <= target.index < info.vocab_size:
            issues.append((f"token id {target.index} is out of range (vocabulary of {info.vocab_size})", None))
    if target.kind in ("logit", *TWO_MODEL_KINDS) and not info.has_lm_head:
        issues.append((f"a {target.kind} target needs a model with an LM head", "dream a neuron or a direction instead"))
    if target.two_models:
        if other is None:
            issues.append((f"a {target.kind} target compares two models: it needs the reference model",
                           "name it with `other:` (on the command line, --other)"))
        else:
            if not other.has_lm_head:
                issues.append((f"the reference model {target.other!r} has no LM head", None))
            if other.vocab_size != info.vocab_size:
                issues.append((f"the reference model {target.other!r} has another vocabulary ({other.vocab_size} "
                               f"tokens against {info.vocab_size}): both models must read the same tokens", None))
    if target.sign not in (1, -1):
        issues.append((f"sign must be 1 or -1 (got {target.sign})", None))
    if target.kind == "edit_direction" and (target.direction is None or len(target.direction) != info.d_mlp):
        got = None if target.direction is None else len(target.direction)
        issues.append((f"an edit_direction target needs a vector over the layer's neurons, length d_mlp = "
                       f"{info.d_mlp} (got {got})", None))
    if target.kind == "direction" and (target.direction is None or len(target.direction) != info.d_model):
        got = None if target.direction is None else len(target.direction)
        issues.append((f"a direction target needs a vector of length d_model = {info.d_model} (got {got})", None))
    if settings.steps < 1:
        issues.append((f"steps must be at least 1 (got {settings.steps})", "try --steps 500"))
    if span < 1:
        issues.append((f"the span must have at least one position (got {span})", None))
    elif info.max_positions and span + prefix > info.max_positions:
        issues.append((f"a span of {span} tokens{f' (+{prefix} fixed)' if prefix else ''} is longer than the "
                       f"model's context ({info.max_positions} positions)", f"use a span of at most {info.max_positions - prefix}"))
    elif not -span - prefix <= target.position < span + prefix:
        issues.append((f"position {target.position} is outside the input ({span + prefix} tokens)", "use -1, the last token"))
    if not (0 < settings.init_prob < 1 and settings.lr > 0 and settings.temp_start > 0 and settings.temp_floor > 0
            and 0 < settings.decay <= 1 and settings.warmup >= 0):
        issues.append(("settings out of range: need 0 < init_prob < 1, lr > 0, temperatures > 0, 0 < decay <= 1, "
                       "warmup >= 0", None))
    return issues
