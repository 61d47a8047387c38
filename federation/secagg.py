"""SecAgg+ for training rounds: what both sides agree on, and the school's side of it.

The protocol is Flower's own (`SecAggPlusWorkflow` at the district, `secaggplus_mod` at the
school); this module only decides *what* a school feeds into it, so that SecAgg+'s clipping and
quantization cannot silently distort an update:

- A school sends its **delta** (trained weights − the global model it received), clipped
  explicitly to ±`update_bound` per coordinate and multiplied by `update_scale`
  (= SecAgg+'s `clipping_range` / `update_bound`), so every value it hands to SecAgg+ lies in
  [−clipping_range, clipping_range] and SecAgg+'s own clip never acts. The share of
  coordinates the school had to clip travels *inside* the masked vector (one extra array), so
  the district learns only the family-weighted share over all schools, never one school's.
  On NHES the largest |delta| measured was about 1.1; the default bound is 4.
- The weight is the school's number of training families; `max_weight` is at least the
  largest school (a school above it declines instead of overflowing).
- A school that declines (budget spent, too small, policy fails) still completes the protocol
  with weight 0 and a zero vector, and says why in its plain status: the masks of the others
  stay intact and the district records its reason.

Quantization error bound (per coordinate, in the model's units), between the SecAgg+ average of
the deltas and plain FedAvg of the same deltas, with k schools in the sum, bound B, weights
n_i, max weight W and Q = `quantization_range`: SecAgg+ rounds each scaled value stochastically
to one of 2C/Q-wide steps (error < 1 step per school) and each weight n_i/W to 1/Q (error
≤ 1/(2Q)). With D = Σ n_i / W − k/(2Q) the error is below 2kB/(Q·D) from the values plus
kB/(Q·D) from the weights: `quantization_error_bound` = 3kB/(Q·D). For 16 NHES schools
(B = 4, W = 1786, Σ n = 10828, Q = 2²²) that is about 7.6e-6.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.compat.common import recorddict_compat as compat
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from client_node.errors import NodeError

# The records of a SecAgg+ training message (Flower's legacy FitIns/FitRes layout).
SECAGG_RECORD = RECORD_KEY_CONFIGS
FITINS_ARRAYS = "fitins.parameters"
FITINS_CONFIG = "fitins.config"
FITRES_ARRAYS = "fitres.parameters"
FITRES_METRICS = "fitres.metrics"
FITRES_NUM_EXAMPLES = "fitres.num_examples"
FITRES_STATUS = "fitres.status"

# What the district adds to a SecAgg+ training request.
UPDATE_BOUND = "update-bound"
UPDATE_SCALE = "update-scale"
ARRAY_NAMES = "array-names"
MAX_WEIGHT = "max-weight"

# What a school's SecAgg+ replies may carry, stage by stage (Flower's keys).
SECAGG_REPLY_KEYS = frozenset(
    {
        Key.PUBLIC_KEY_1,
        Key.PUBLIC_KEY_2,
        Key.DESTINATION_LIST,
        Key.CIPHERTEXT_LIST,
        Key.MASKED_PARAMETERS,
        Key.NODE_ID_LIST,
        Key.SHARE_LIST,
    }
)
SECAGG_REPLY_RECORDS = frozenset(
    {SECAGG_RECORD, FITRES_ARRAYS, FITRES_METRICS, FITRES_NUM_EXAMPLES, FITRES_STATUS}
)

DEFAULT_UPDATE_BOUND = 4.0
DEFAULT_CLIPPING_RANGE = 8.0  # Flower's default
DEFAULT_QUANTIZATION_RANGE = 2**22  # Flower's default
DEFAULT_MODULUS_RANGE = 2**32  # Flower's default


class SecAggTerms(BaseModel):
    """The SecAgg+ part of a training request, as the school reads it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    update_bound: float = Field(gt=0, allow_inf_nan=False)
    update_scale: float = Field(gt=0, allow_inf_nan=False)
    array_names: str = Field(min_length=1)
    max_weight: float = Field(gt=0, allow_inf_nan=False)

    @property
    def names(self) -> list[str]:
        return self.array_names.split(",")

    @classmethod
    def split(cls, record: object) -> tuple[SecAggTerms, ConfigRecord]:
        """(the SecAgg+ terms, the rest of the training request)."""
        if not isinstance(record, ConfigRecord):
            raise NodeError("the secure-aggregation request carries no config record")
        ours = {UPDATE_BOUND, UPDATE_SCALE, ARRAY_NAMES, MAX_WEIGHT}
        try:
            terms = cls.model_validate(
                {k.replace("-", "_"): v for k, v in record.items() if k in ours}
            )
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]).replace("_", "-")
            raise NodeError(
                f"secure-aggregation request: '{field}' = {err.get('input')!r}: {err['msg']}"
            ) from None
        return terms, ConfigRecord({k: v for k, v in record.items() if k not in ours})


def is_secagg_train(message: Message) -> bool:
    """Is this a training message of Flower's SecAgg+ protocol?"""
    return message.metadata.message_type == MessageType.TRAIN and isinstance(
        message.content.get(SECAGG_RECORD), ConfigRecord
    )


def secure_aggregation_mod(
    message: Message, context: Context, call_next: ClientAppCallable
) -> Message:
    """Flower mod: SecAgg+ training messages go through Flower's `secaggplus_mod`; every other
    message (plain training, evaluation, queries) goes straight on. One ClientApp serves both
    kinds of run; whether a plain update may leave is the policy's call (see client_app)."""
    if is_secagg_train(message):
        return secaggplus_mod(message, context, call_next)
    return call_next(message, context)


def encode_update(
    update: Mapping[str, np.ndarray], *, names: Sequence[str], bound: float, scale: float
) -> tuple[list[np.ndarray], float]:
    """The vector a school hands to SecAgg+: each delta clipped to ±bound and scaled, then the
    share of clipped coordinates (as a one-element array). Returns (vector, clipped share)."""
    clipped = total = 0
    out: list[np.ndarray] = []
    for name in names:
        delta = np.asarray(update[name], dtype=np.float64)
        if not np.isfinite(delta).all():
            raise ValueError(f"update {name!r} is not finite")
        clipped += int((np.abs(delta) > bound).sum())
        total += delta.size
        out.append(np.clip(delta, -bound, bound) * scale)
    share = clipped / total if total else 0.0
    return [*out, np.array([share], dtype=np.float64)], share


def masked_input(vector: list[np.ndarray], weight: int, plain: dict) -> RecordDict:
    """What `secaggplus_mod` masks (the vector, weighted) and what it lets through beside it
    (the school's status and aggregate metrics): Flower's legacy FitRes layout."""
    fitres = FitRes(
        status=Status(code=Code.OK, message=""),
        parameters=ndarrays_to_parameters(vector),
        num_examples=weight,
        metrics=plain,
    )
    return compat.fitres_to_recorddict(fitres, keep_input=False)


def zero_update(shapes: Mapping[str, tuple[int, ...]], names: Sequence[str]) -> list[np.ndarray]:
    """A declining school's contribution: nothing (it is sent with weight 0)."""
    return [*(np.zeros(shapes[n], dtype=np.float64) for n in names), np.zeros(1, np.float64)]


def decode_aggregate(
    vector: Sequence[np.ndarray], *, names: Sequence[str], scale: float
) -> tuple[dict[str, np.ndarray], float]:
    """(the weighted mean delta, the weighted share of clipped coordinates) from SecAgg+'s
    weighted average of what the schools sent."""
    if len(vector) != len(names) + 1:
        raise ValueError(f"the aggregate has {len(vector)} arrays; expected {len(names) + 1}")
    delta = {
        name: np.asarray(v, dtype=np.float64) / scale
        for name, v in zip(names, vector[:-1], strict=True)
    }
    return delta, float(np.asarray(vector[-1]).reshape(-1)[0])


def quantization_error_bound(
    *,
    schools: int,
    update_bound: float,
    max_weight: float,
    total_weight: float,
    quantization_range: int = DEFAULT_QUANTIZATION_RANGE,
) -> float:
    """Largest per-coordinate difference between SecAgg+'s average of the deltas and plain
    FedAvg of the same deltas (see the module docstring for the derivation)."""
    k, q = schools, quantization_range
    d = total_weight / max_weight - k / (2 * q)
    if d <= 0:
        return math.inf
    return 3 * k * update_bound / (q * d)


# --- secure analytics (federation/analytics_secagg.py): what a school feeds into SecAgg+ -----

VALUE_BOUND = "value-bound"  # the district's bound on any entry of an analytics vector
DEFAULT_VALUE_BOUND = 10_000.0  # families; at least the largest school plus the noise's tail
ANALYTICS_MAX_WEIGHT = 1.0  # every vector has weight 1: SecAgg+'s mean × the vectors = the sum
TAIL = 3  # noise shares, suppressed cells, clipped entries


@dataclass(frozen=True)
class AnalyticsSum:
    """What the district decodes from SecAgg+'s sum of the schools' analytics vectors."""

    values: np.ndarray  # per secure statistic: Σ (released value + noise share)
    released: np.ndarray  # per secure statistic: how many schools released it (integers)
    noise_shares: int  # vectors carrying a noise share (every vector in the sum)
    suppressed: int  # cells withheld at the schools (k), all schools together
    clipped: int  # entries clipped to ±value bound (0 unless the bound is too small)


def encode_analytics(
    values: np.ndarray,
    released: np.ndarray,
    *,
    suppressed: int,
    bound: float,
    clipping_range: float,
) -> tuple[list[np.ndarray], int]:
    """The vector a school hands to SecAgg+: its noisy values clipped to ±bound, its released
    flags, then (1 noise share, suppressed cells, clipped entries); all scaled by
    clipping_range / bound so SecAgg+'s own clip never acts. Returns (vector, clipped)."""
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError("the analytics share is not finite")
    clipped = int((np.abs(values) > bound).sum())
    scale = clipping_range / bound
    tail = np.array([1.0, float(suppressed), float(clipped)])
    return [
        np.clip(values, -bound, bound) * scale,
        np.asarray(released, dtype=np.float64) * scale,
        tail * scale,
    ], clipped


def decode_analytics(
    mean: Sequence[np.ndarray], *, vectors: int, bound: float, clipping_range: float
) -> AnalyticsSum:
    """The sum from SecAgg+'s weighted mean (all weights 1) of `vectors` analytics vectors.
    Counts are rounded: their quantization error stays below half a unit (see
    `analytics_quantization`)."""
    if len(mean) != 3 or len(mean[2]) != TAIL or len(mean[0]) != len(mean[1]):
        raise ValueError(f"the analytics aggregate has the wrong layout: {[len(a) for a in mean]}")
    total = [np.asarray(a, dtype=np.float64) * vectors * bound / clipping_range for a in mean]
    tail = np.rint(total[2]).astype(int)
    return AnalyticsSum(
        values=total[0],
        released=np.rint(total[1]).astype(int),
        noise_shares=int(tail[0]),
        suppressed=int(tail[1]),
        clipped=int(tail[2]),
    )


def analytics_quantization(
    *, vectors: int, bound: float, quantization_range: int = DEFAULT_QUANTIZATION_RANGE
) -> tuple[float, float]:
    """(largest error, error variance bound) of one summed entry, in counts.

    SecAgg+ rounds each scaled entry stochastically (unbiased) to a step of 2C/Q, i.e.
    2·bound/Q in counts: each school's error is below one step, with variance at most a quarter
    step². With weight 1 (= max weight) the weight itself is exact."""
    step = 2 * bound / quantization_range
    return vectors * step, vectors * step * step / 4
