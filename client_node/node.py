"""A school node: its directory, its policy, its ledger, and what it does for one round.

Layout of a node directory (everything stays on the school's disk):

    node.yaml            the node's config (school id, policy file)
    policy.yaml          the policy the node enforces (policy.yaml.sig: its signature)
    officer.pub          the district privacy officer's public key (the trust anchor)
    audit.log            the hash-chained audit log (audit.log.head: its head)
    opt_outs.sqlite      families who opted out
    data/train.csv       family table the node trains on
    data/test.csv        family table held out for evaluation
    ledger.sqlite        the ε ledger

Nothing here knows about Flower: the ClientApp in `federation` is a thin adapter around
`SchoolNode.train_round` and `SchoolNode.evaluate`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from client_node.errors import NodeError
from client_node.model import build_model, get_weights, set_weights
from client_node.optout import OptOutRegistry
from client_node.pseudonym import Pseudonymizer
from client_node.table import FAMILY_ID, FamilyTable, read_table, write_table
from client_node.training import (
    Evaluation,
    PrivateTrainer,
    TrainSettings,
    evaluate,
    poisson_schedule,
)
from policies.errors import PolicyError
from policies.trust import load_trusted_policy
from privacy.accountant import calibrate_noise_multiplier, epsilon_of
from privacy.audit import AuditLog
from privacy.errors import BudgetExceeded
from privacy.ledger import EpsilonLedger, Plan

NODE_CONFIG = "node.yaml"


class NodeConfig(BaseModel):
    """node.yaml: written by school IT (or the simulator), read by the node."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    school_id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    policy: str = "policy.yaml"
    district_policy: str = "district.yaml"  # used only when `policy` is a school override
    train_table: str = "data/train.csv"
    test_table: str = "data/test.csv"
    ledger: str = "ledger.sqlite"
    trust_anchor: str = "officer.pub"
    audit_log: str = "audit.log"
    opt_outs: str = "opt_outs.sqlite"


def write_family_tables(
    node_dir: Path, *, train: pd.DataFrame, test: pd.DataFrame, pseudonymize: bool = True
) -> None:
    """Write the node's family tables. Raw family ids (a table from outside the store, e.g. a
    survey) are pseudonymized under the school's secret first, like an export's; tables built
    from the store already hold pseudonyms (`pseudonymize=False`)."""
    pseudonym = Pseudonymizer.for_node(node_dir)
    config = read_node_config(node_dir)
    for frame, name in ((train, config.train_table), (test, config.test_table)):
        if pseudonymize:
            ids = frame[FAMILY_ID].astype(str)
            unique = ids.unique().tolist()
            mapping = dict(zip(unique, pseudonym.many("family", unique), strict=True))
            frame = frame.assign(**{FAMILY_ID: ids.map(mapping)})
        write_table(frame, node_dir / name)


def write_node_config(node_dir: Path, config: NodeConfig) -> None:
    node_dir.mkdir(parents=True, exist_ok=True)
    (node_dir / NODE_CONFIG).write_text(yaml.safe_dump(config.model_dump(), sort_keys=False))


def install_policy(
    node_dir: Path, *, policy: Path, trust_anchor: Path, district: Path | None = None
) -> None:
    """Put a policy (and, for a school override, the district policy it extends), their
    signatures and the officer's public key into a node directory.

    Nothing is checked here on purpose: the node checks when it opens, and refuses.
    """
    config = read_node_config(node_dir)
    pairs = [(Path(policy), config.policy)]
    if district is not None:
        pairs.append((Path(district), config.district_policy))
    for source, name in pairs:
        shutil.copyfile(source, node_dir / name)
        signature = source.with_name(source.name + ".sig")
        target = node_dir / (name + ".sig")
        if signature.is_file():
            shutil.copyfile(signature, target)
        else:
            target.unlink(missing_ok=True)
    shutil.copyfile(trust_anchor, node_dir / config.trust_anchor)


class RoundStatus(StrEnum):
    TRAINED = "trained"
    REFUSED = "refused"  # the ledger or the policy said no
    EXCLUDED = "excluded"  # the school may not take part (too few families)
    FAILED = "failed"  # the node could not run (bad table, bad policy)


@dataclass(frozen=True)
class RoundOutcome:
    """What a school reports after a training request: aggregate figures only."""

    school_id: str
    status: RoundStatus
    reason: str
    n_families: int
    epsilon_spent: float
    epsilon_budget: float
    delta: float
    noise_multiplier: float = 0.0
    sample_rate: float = 0.0
    steps: int = 0
    train_loss: float = float("nan")
    weights: dict[str, np.ndarray] | None = None


def noise_generator(seed: int | None, school_id: str, server_round: int) -> torch.Generator:
    """The generator for Poisson sampling and DP noise.

    A seeded generator makes a simulation reproducible. Without a seed the generator is seeded
    from the operating system's CSPRNG: torch's default generator starts from a fixed seed in
    every process, so its noise would be predictable.
    """
    if seed is None:
        material = os.urandom(8)
    else:
        material = hashlib.sha256(f"{seed}/{school_id}/{server_round}".encode()).digest()[:8]
    return torch.Generator().manual_seed(int.from_bytes(material, "little") >> 1)


def read_node_config(node_dir: Path) -> NodeConfig:
    path = Path(node_dir) / NODE_CONFIG
    if not path.is_file():
        raise NodeError(f"node directory {node_dir}: {NODE_CONFIG} not found")
    try:
        return NodeConfig.model_validate(yaml.safe_load(path.read_text()))
    except (ValidationError, yaml.YAMLError, TypeError) as exc:
        raise NodeError(f"node config {path}: invalid ({str(exc).splitlines()[0]})") from None


def node_audit_log(node_dir: Path) -> AuditLog:
    """The node's audit log (usable even when the policy is refused)."""
    try:
        name = read_node_config(node_dir).audit_log
    except NodeError:
        name = NodeConfig.model_fields["audit_log"].default
    return AuditLog(Path(node_dir) / name)


class SchoolNode:
    """One school's node, opened from its directory.

    Opening a node verifies its policy (signature by the trusted officer, unchanged, in force
    today); a node never acts under a policy that fails, and the refusal is audited.
    """

    def __init__(self, node_dir: Path, *, today: date | None = None, in_force: bool = True) -> None:
        self.dir = Path(node_dir)
        self.config = read_node_config(self.dir)
        self.audit = AuditLog(self.dir / self.config.audit_log)
        try:
            self.policy = load_trusted_policy(
                self.dir / self.config.policy,
                pubkey=self.dir / self.config.trust_anchor,
                today=today,
                district=self.dir / self.config.district_policy,
                in_force=in_force,
            )
        except PolicyError as exc:
            self.audit.append("refusal", what="policy", reason=str(exc))
            raise
        self.ledger = EpsilonLedger(
            self.dir / self.config.ledger,
            budget=self.policy.training_budget,
            period=self.policy.period,
        )
        self.analytics_ledger = EpsilonLedger(
            self.dir / self.config.ledger,
            budget=self.policy.analytics_budget,
            period=self.policy.period,
            purpose="analytics",
        )
        self.pseudonym = Pseudonymizer.for_node(self.dir)
        self.opt_outs = OptOutRegistry(
            self.dir / self.config.opt_outs, pseudonymizer=self.pseudonym
        )

    @property
    def school_id(self) -> str:
        return self.config.school_id

    def train_table(self) -> FamilyTable:
        """The families to train on: opted-out families are never in it."""
        return self.opt_outs.exclude(read_table(self.dir / self.config.train_table))

    def test_table(self) -> FamilyTable:
        return self.opt_outs.exclude(read_table(self.dir / self.config.test_table))

    def knows_family(self, family_id: str) -> bool:
        """Is `family_id` (the school's own id) one of this node's families?"""
        pid = self.pseudonym("family", family_id)
        store = self.dir / "store.sqlite"
        if store.is_file():
            with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
                found = db.execute("SELECT 1 FROM families WHERE family_pid = ?", (pid,)).fetchone()
                if found:
                    return True
        for name in (self.config.train_table, self.config.test_table):
            path = self.dir / name
            if path.is_file() and pid in path.read_text():
                return True
        return False

    def _outcome(self, status: RoundStatus, reason: str, n: int, **kw: object) -> RoundOutcome:
        if status != RoundStatus.TRAINED:
            self.audit.append(
                "refusal",
                what="training",
                status=str(status),
                reason=reason,
                policy_id=self.policy.policy_id,
                policy_version=self.policy.version,
            )
        return RoundOutcome(
            school_id=self.school_id,
            status=status,
            reason=reason,
            n_families=n,
            epsilon_spent=self.ledger.spent(),
            epsilon_budget=self.policy.training_budget.epsilon,
            delta=self.policy.training_budget.delta,
            **kw,  # type: ignore[arg-type]
        )

    def decline(self, *, reason: str) -> RoundOutcome:
        """Refuse a training round for `reason` (audited, nothing spent)."""
        return self._outcome(RoundStatus.REFUSED, reason, len(self.train_table()))

    def train_round(
        self,
        *,
        weights: dict[str, np.ndarray],
        run_id: str,
        server_round: int,
        planned_rounds: int,
        target_epsilon: float,
        settings: TrainSettings,
        seed: int | None = None,
    ) -> RoundOutcome:
        """Train one round under the policy and the ledger, or say why not.

        `target_epsilon` is what the district asks this run to spend (0: all that remains);
        the school never spends more than its ledger allows.
        """
        table = self.train_table()
        n = len(table)
        policy = self.policy
        # families the school holds (held-out ones included), opted-out families not counted
        if (size := n + len(self.test_table())) < policy.min_school_size:
            return self._outcome(
                RoundStatus.EXCLUDED,
                f"{size} families is below the policy's minimum school size {policy.min_school_size}",
                n,
            )
        if planned_rounds > policy.training.max_rounds_per_run:
            return self._outcome(
                RoundStatus.REFUSED,
                f"the run plans {planned_rounds} rounds; the policy allows at most"
                f" {policy.training.max_rounds_per_run}",
                n,
            )
        try:
            plan = self.ledger.plan(run_id) or self._make_plan(
                run_id, n, planned_rounds, target_epsilon, settings
            )
            model = build_model(len(table.feature_names))
            set_weights(model, weights)
            trainer = PrivateTrainer(
                model,
                table,
                noise_multiplier=plan.noise_multiplier,
                sample_rate=plan.sample_rate,
                max_grad_norm=policy.training.max_grad_norm,
                settings=settings,
                generator=noise_generator(seed, self.school_id, server_round),
            )
            if trainer.spend.steps != plan.steps_per_round:
                raise NodeError(
                    f"school {self.school_id}: the training settings changed during run {run_id}"
                )
            self.ledger.charge(trainer.spend, run_id=run_id, round=server_round)
        except BudgetExceeded as exc:
            return self._outcome(RoundStatus.REFUSED, str(exc), n)
        loss = trainer.run()
        weights = get_weights(model)
        if not all(np.isfinite(w).all() for w in weights.values()):
            return self._outcome(
                RoundStatus.FAILED,
                "training diverged (non-finite weights); lower the learning rate",
                n,
            )
        run_spends = self.ledger.run_history(run_id)
        return self._outcome(
            RoundStatus.TRAINED,
            "",
            n,
            noise_multiplier=plan.noise_multiplier,
            sample_rate=plan.sample_rate,
            steps=sum(s.steps for s in run_spends),
            train_loss=loss,
            weights=weights,
        )

    def _make_plan(
        self, run_id: str, n: int, rounds: int, target_epsilon: float, settings: TrainSettings
    ) -> Plan:
        """Fix the noise multiplier once for the run's planned rounds, within the ledger."""
        history = self.ledger.history()
        budget, delta = self.policy.training_budget.epsilon, self.policy.training_budget.delta
        spent = epsilon_of(history, delta=delta)
        target = budget if target_epsilon <= 0 else min(budget, spent + target_epsilon)
        sample_rate, steps_per_round = poisson_schedule(n, settings)
        sigma = calibrate_noise_multiplier(
            history=history,
            target_epsilon=target,
            delta=delta,
            sample_rate=sample_rate,
            steps=steps_per_round * rounds,
        )
        plan = Plan(run_id, sigma, sample_rate, steps_per_round, rounds, target)
        self.ledger.save_plan(plan)
        return plan

    def evaluate(self, *, weights: dict[str, np.ndarray]) -> Evaluation | None:
        """Aggregate metrics of `weights` on the held-out table; None if the school is excluded."""
        table = self.test_table()
        if len(table) + len(self.train_table()) < self.policy.min_school_size:
            return None
        model = build_model(len(table.feature_names))
        set_weights(model, weights)
        return evaluate(model, table)
