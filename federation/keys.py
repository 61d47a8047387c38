"""Names of the records and keys in SchoolFed's Flower messages, and what a node may send."""

from __future__ import annotations

ARRAYS = "arrays"  # ArrayRecord: the model's weights
CONFIG = "config"  # ConfigRecord: what the district asks for
METRICS = "metrics"  # MetricRecord: aggregate numbers a school sends back
STATUS = "status"  # ConfigRecord: the school's id, its status and reason

NUM_EXAMPLES = "num-examples"  # the FedAvg weighting key

# What the district sends in a training request.
RUN_ID = "run-id"
PLANNED_ROUNDS = "planned-rounds"
TARGET_EPSILON = "target-epsilon"
LOCAL_EPOCHS = "local-epochs"
BATCH_SIZE = "batch-size"
LEARNING_RATE = "learning-rate"
MOMENTUM = "momentum"
SEED = "seed"  # only in simulations; absent means "seed the noise from the OS"
# Deployment: evaluate the model the request carries (last round's) before training on it,
# and send that evaluation with the training reply: one exchange per round instead of two.
EVALUATE_FIRST = "evaluate-first"

# Analytics queries (`query.analytics` messages): the request travels as JSON text.
ANALYTICS_ACTION = "analytics"
REQUEST = "request"

# The egress allow-list: a reply may carry these records and, in them, only these keys.
TRAIN_METRICS = frozenset(
    {
        NUM_EXAMPLES,
        "epsilon-spent",
        "epsilon-budget",
        "delta",
        "noise-multiplier",
        "sample-rate",
        "steps",
        "train-loss",
    }
)
EVALUATE_METRICS = frozenset({NUM_EXAMPLES, "loss", "accuracy", "auc"})
# The evaluation of the incoming model, in a training reply (EVALUATE_FIRST): the same figures.
EVAL_PREFIX = "eval-"
TRAIN_EVALUATION_METRICS = frozenset(EVAL_PREFIX + k for k in EVALUATE_METRICS)
STATUS_KEYS = frozenset({"school-id", "status", "reason", "policy-id", "policy-version"})
ALLOWED_RECORDS = frozenset({ARRAYS, METRICS, STATUS})
