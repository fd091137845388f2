"""The judge: did a model reach the forgetting target, and did it keep what it should? (docs/design.md §17)

One function decides three things, from the same numbers: the verdict written into `unlearning_results.json`, when
the goal-driven schedule stops (`hf_scrub.goal`), and which epoch a run returns (the goal-driven schedule and
SCRUB+R keep the best epoch by `Judgement.rank`). So a run can never print "goal reached" beside "retain NOT
kept": both are the same `Judgement`.

What it reads (`Evidence`, taken at every epoch end by `UnlearningTrainer.record_epoch`, epoch 0 = the original):
each forget row's *membership score* (`hf_scrub.losses.membership_scores`: its loss, i.e. how member-like the row
is; for a causal LM the Min-K% NLL of its completion), the same for the reference rows, which forget rows are still
recognised (predicted as a forgotten class; a causal LM's: answer reproduced by greedy decoding), and the accuracy on
a fixed retain sample. The targets come only from data the run
has, never from a Retrain model:

- **class** (no retain row carries a forgotten label): a model that never saw the classes does not predict them.
  Met when at most `CLASS_TOLERANCE` of the forget rows, and of the held-out rows of those classes, are predicted as
  a forgotten class.
- **distribution** (every other request with unseen reference rows: selective, indices, ids, a column, causal-LM
  rows): the forget rows must look to the model as unseen rows of their distribution looked to the original (the
  stand-in for a model that never saw them). The forget rows' scores under the current model and the reference
  rows' scores under the original are compared as whole distributions with the two-sample Kolmogorov-Smirnov test:
  met while it cannot tell them apart (p >= `ALPHA`); otherwise "short" when the forget rows are still the more
  member-like (membership AUC P(reference loss > forget loss) above 0.5) and "overshot" when they now stand out as
  *more* forgotten than unseen data, which an attacker sees as well as memorisation. Not an error rate (at 100 rows
  its band is +/- 8-11 points) and not the AUC alone: a location test, it calls two distributions alike when their
  shapes differ (measured: forget rows all at middling losses against unseen rows that are either sure and right or
  wrong, AUC 0.48, while a threshold attack still told them apart at 60 %). A causal LM's request must also not be
  *extractable*: at most `CLASS_TOLERANCE` more of the forget rows' answers reproduced by greedy decoding than of the
  reference rows' under the original (a score can match unseen rows' while the fact tokens are still the argmax:
  measured on the demo, KS p = 0.33 with 3 of 8 answers reproduced against 1 of 20 unseen); above it, "short".
- **none**: no unseen reference (no test split, or reference rows the original trained on). Not judged.
- **retain kept**: the accuracy (a causal LM's: next-token accuracy) on a fixed seeded sample of retain rows
  (`history_retain_examples`) at most `RETAIN_TOLERANCE` below the original's. The goal-driven schedule tests its
  steps on the same rows, so its steps and the verdict read the retain side alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
from scipy.stats import ks_2samp
from sklearn.metrics import roc_auc_score

CLASS_TOLERANCE = 0.02
RETAIN_TOLERANCE = 0.02
ALPHA = 0.05  # the two-sample test's level: distributions it cannot tell apart at 5 % count as alike


class Kind(str, Enum):
    """What a request is judged against."""

    CLASS = "class"
    DISTRIBUTION = "distribution"
    NONE = "none"


class Status(str, Enum):
    """Where the forget side stands against its target."""

    SHORT = "short"  # still member-like
    MET = "met"
    OVERSHOT = "overshot"  # distribution only: more forgotten than unseen data
    UNJUDGED = "unjudged"  # no unseen reference


def request_kind(
    forget_labels: Sequence[int] | None,
    retain_labels: Sequence[int] | None,
    num_reference: int,
    reference_unseen: bool,
) -> Kind:
    """The kind of a request from its data: class when no retain row carries a forget row's label (labels None: a
    causal LM, which has no classes)."""
    if forget_labels is not None and retain_labels is not None:
        forget_classes = set(map(int, forget_labels))
        if forget_classes and not forget_classes & set(map(int, retain_labels)):
            return Kind.CLASS
    return Kind.DISTRIBUTION if num_reference > 0 and reference_unseen else Kind.NONE


def membership_auc(forget_scores: np.ndarray, reference_scores: np.ndarray) -> float:
    """P(a reference row's loss > a forget row's loss), ties counted half: the AUC of an attacker who calls the
    lower-loss row the member. 0.5: the forget rows look like the reference rows; 1: every forget row is more
    member-like than every reference row."""
    labels = np.r_[np.ones(len(forget_scores)), np.zeros(len(reference_scores))]
    return float(roc_auc_score(labels, -np.r_[forget_scores, reference_scores]))


def distribution_test(forget_scores: np.ndarray, reference_scores: np.ndarray) -> tuple[float, float]:
    """(KS statistic, p-value) of the two-sample Kolmogorov-Smirnov test (scipy, exact for small samples)."""
    result = ks_2samp(forget_scores, reference_scores)
    return float(result.statistic), float(result.pvalue)


def matched_quantiles(forget_scores: np.ndarray, reference_scores: np.ndarray) -> np.ndarray:
    """Per forget row, the reference score at the row's own quantile among the forget rows: the monotone map that
    carries the forget rows' score distribution onto the reference's (in one dimension, the optimal transport).

    Rows tied in score keep their order (stable ranks), so equal scores still get distinct targets. These are the
    per-row targets of the goal-driven schedule's gate (`hf_scrub.goal`).
    """
    ranks = np.argsort(np.argsort(forget_scores, kind="stable"), kind="stable")
    levels = (ranks + 0.5) / len(forget_scores)
    return np.quantile(np.asarray(reference_scores, dtype=np.float64), levels)


@dataclass(frozen=True)
class Evidence:
    """What the judge reads of one model.

    `forget_scores` / `reference_scores`: membership scores (losses, higher = less member-like) of the forget rows and
    of the reference rows (for a class request the held-out rows of the forgotten classes). `forget_recognised` /
    `reference_recognised`: which rows are predicted as a forgotten class (class requests), or whose answer greedy
    decoding reproduces (causal LMs); None otherwise.
    `retain_accuracy` on `num_retain` retain rows, measured as `retain_measure` says; `retain_scores`: the retain
    rows' membership scores (a class request's gate targets come from the original's).
    """

    forget_scores: np.ndarray
    retain_accuracy: float
    num_retain: int
    retain_measure: str = "accuracy"
    reference_scores: np.ndarray | None = None
    retain_scores: np.ndarray | None = None
    forget_recognised: np.ndarray | None = None
    reference_recognised: np.ndarray | None = None


@dataclass(frozen=True)
class Judgement:
    """The judge's reading of one model. `statistic`: the recognised share (class) or the membership AUC
    (distribution); `distance`, `p_value`: the KS statistic and its p-value (distribution); `reproduced`, against
    `reference_reproduced`: the share of forget rows, and of reference rows under the original, whose answer greedy
    decoding reproduces (causal LMs)."""

    kind: Kind
    status: Status
    statistic: float | None
    distance: float | None
    p_value: float | None
    retain_kept: bool
    retain_accuracy: float
    original_retain_accuracy: float
    num_forget: int
    num_reference: int
    num_retain: int
    retain_measure: str
    reproduced: float | None = None
    reference_reproduced: float | None = None

    @property
    def forget_met(self) -> bool | None:
        return None if self.status is Status.UNJUDGED else self.status is Status.MET

    @property
    def goal_reached(self) -> bool:
        return self.status is Status.MET and self.retain_kept

    @property
    def forget_distance(self) -> float:
        """How far the forget side is from its target (0 = on it): the recognised share, or the KS statistic."""
        if self.statistic is None:
            return 0.0
        return self.statistic if self.kind is Kind.CLASS else self.distance

    @property
    def rank(self) -> tuple[int, int, float, float]:
        """Sort key of the best epoch (smallest first): goal reached, then retain kept, then the forget side closest
        to its target, then the retain accuracy. Equal keys: the earliest epoch (`best_epoch`)."""
        return (
            not self.goal_reached,
            not self.retain_kept,
            round(self.forget_distance, 9),
            -round(self.retain_accuracy, 9),
        )

    def describe_forget(self) -> str:
        if self.kind is Kind.CLASS:
            return (
                f"a model that never saw the forgotten classes: at most {CLASS_TOLERANCE} of the forget rows and of "
                f"unseen rows of those classes predicted as one of them ({self.statistic:.4f} are; {self.num_forget} "
                f"forget rows, {self.num_reference} unseen)"
            )
        if self.kind is Kind.DISTRIBUTION:
            extraction = ""
            if self.reproduced is not None:
                extraction = (
                    f"; answers reproduced by greedy decoding: {self.reproduced:.4f} of the forget rows, "
                    f"{self.reference_reproduced:.4f} of the unseen rows under the original (at most "
                    f"{CLASS_TOLERANCE} more)"
                )
            return (
                f"unseen rows of the forget set's distribution: the {self.num_forget} forget rows' losses against the "
                f"original's on {self.num_reference} unseen rows, two-sample KS p = {self.p_value:.3g} (alike at "
                f">= {ALPHA}), membership AUC {self.statistic:.4f} (0.5: alike){extraction}"
            )
        return "none: no unseen examples of the forget set's distribution (pass a test split to judge)"

    def describe_retain(self) -> str:
        return (
            f"retain {self.retain_measure} {self.retain_accuracy:.4f} vs the original's "
            f"{self.original_retain_accuracy:.4f} on {self.num_retain} retain rows"
        )

    def standing(self) -> str:
        """One line: where the forget and retain sides stand."""
        forget = {
            Status.MET: "forget target met",
            Status.SHORT: "forget target NOT met (still member-like)",
            Status.OVERSHOT: "forget target NOT met (overshot: more forgotten than unseen data)",
            Status.UNJUDGED: "forget target not judged",
        }[self.status]
        return f"{forget}; {'retain kept' if self.retain_kept else 'retain NOT kept'}"

    def to_log(self) -> dict[str, float]:
        """The numbers of this judgement, for the Trainer's log history (floats only: any logger takes them)."""
        numbers = {
            "judge_status": float(list(Status).index(self.status)),
            "judge_retain_kept": float(self.retain_kept),
            "judge_retain_accuracy": self.retain_accuracy,
            "judge_num_forget": float(self.num_forget),
            "judge_num_reference": float(self.num_reference),
            "judge_num_retain": float(self.num_retain),
        }
        optional = {
            "judge_statistic": self.statistic,
            "judge_distance": self.distance,
            "judge_p_value": self.p_value,
            "judge_reproduced": self.reproduced,
        }
        return numbers | {key: value for key, value in optional.items() if value is not None}


@dataclass(frozen=True)
class Judge:
    """The judge of one run, fixed at epoch 0 from the original's evidence (`Judge.for_original`)."""

    kind: Kind
    original_retain_accuracy: float
    retain_measure: str = "accuracy"
    reference_scores: np.ndarray | None = None  # the original's, on the reference rows (distribution)
    reference_reproduced: float | None = None  # the original's reproduced share of the reference rows (causal LMs)

    @classmethod
    def for_original(cls, kind: Kind, original: Evidence) -> Judge:
        reference = original.reference_scores if kind is Kind.DISTRIBUTION else None
        if kind is Kind.DISTRIBUTION and (reference is None or len(reference) == 0):
            raise ValueError("A distribution request needs the original's scores on unseen reference rows.")
        reproduced = None
        if kind is Kind.DISTRIBUTION and original.reference_recognised is not None:
            reproduced = float(np.mean(original.reference_recognised))
        return cls(kind, original.retain_accuracy, original.retain_measure, reference, reproduced)

    def __call__(self, evidence: Evidence) -> Judgement:
        num_reference = 0
        statistic = distance = p_value = reproduced = None
        if self.kind is Kind.CLASS:
            shares = [float(np.mean(evidence.forget_recognised))]
            if evidence.reference_recognised is not None and len(evidence.reference_recognised):
                num_reference = len(evidence.reference_recognised)
                shares.append(float(np.mean(evidence.reference_recognised)))
            statistic = max(shares)
            status = Status.MET if statistic <= CLASS_TOLERANCE + 1e-12 else Status.SHORT
        elif self.kind is Kind.DISTRIBUTION:
            num_reference = len(self.reference_scores)
            statistic = membership_auc(evidence.forget_scores, self.reference_scores)
            distance, p_value = distribution_test(evidence.forget_scores, self.reference_scores)
            status = Status.MET
            if p_value < ALPHA:
                status = Status.SHORT if statistic > 0.5 else Status.OVERSHOT
            if self.reference_reproduced is not None and evidence.forget_recognised is not None:
                reproduced = float(np.mean(evidence.forget_recognised))
                if reproduced > self.reference_reproduced + CLASS_TOLERANCE + 1e-12:
                    status = Status.SHORT  # extractable: answers still produced, whatever the scores say
        else:
            status = Status.UNJUDGED
        return Judgement(
            kind=self.kind,
            status=status,
            statistic=statistic,
            distance=distance,
            p_value=p_value,
            retain_kept=evidence.retain_accuracy >= self.original_retain_accuracy - RETAIN_TOLERANCE - 1e-12,
            retain_accuracy=evidence.retain_accuracy,
            original_retain_accuracy=self.original_retain_accuracy,
            num_forget=len(evidence.forget_scores),
            num_reference=num_reference,
            num_retain=evidence.num_retain,
            retain_measure=evidence.retain_measure,
            reproduced=reproduced,
            reference_reproduced=self.reference_reproduced if reproduced is not None else None,
        )

    def from_log(self, entry: Mapping[str, float]) -> Judgement:
        """A judgement this judge logged (`Judgement.to_log`), rebuilt for a resumed run."""
        num_forget, num_reference = int(entry["judge_num_forget"]), int(entry["judge_num_reference"])
        return Judgement(
            kind=self.kind,
            status=list(Status)[int(entry["judge_status"])],
            statistic=entry.get("judge_statistic"),
            distance=entry.get("judge_distance"),
            p_value=entry.get("judge_p_value"),
            retain_kept=bool(entry["judge_retain_kept"]),
            retain_accuracy=entry["judge_retain_accuracy"],
            original_retain_accuracy=self.original_retain_accuracy,
            num_forget=num_forget,
            num_reference=num_reference,
            num_retain=int(entry["judge_num_retain"]),
            retain_measure=self.retain_measure,
            reproduced=entry.get("judge_reproduced"),
            reference_reproduced=self.reference_reproduced if "judge_reproduced" in entry else None,
        )

    def to_log(self) -> dict[str, Any]:
        """What a resumed run needs to rebuild this judge (kept in the Trainer's log history)."""
        return {
            "kind": self.kind.value,
            "original_retain_accuracy": self.original_retain_accuracy,
            "retain_measure": self.retain_measure,
            "reference_scores": None if self.reference_scores is None else self.reference_scores.tolist(),
            "reference_reproduced": self.reference_reproduced,
        }

    @classmethod
    def restore(cls, entry: Mapping[str, Any]) -> Judge:
        """The judge a run logged at its epoch 0 (`Judge.to_log`), for a resumed run."""
        scores = entry["reference_scores"]
        return cls(
            Kind(entry["kind"]),
            entry["original_retain_accuracy"],
            entry["retain_measure"],
            None if scores is None else np.array(scores),
            entry.get("reference_reproduced"),
        )


def best_epoch(judgements: Sequence[Judgement]) -> int:
    """Index of the best judgement by `Judgement.rank`, the earliest among equals."""
    if not judgements:
        raise ValueError("No epochs judged: the best epoch needs at least epoch 0 (the original).")
    ranks = [judgement.rank for judgement in judgements]
    return ranks.index(min(ranks))


def verdict(judgement: Judgement, stopped_because: str, epoch: int) -> dict[str, Any]:
    """The `verdict` block of `unlearning_results.json` for the model the run returned (`epoch`'s), with a one-line
    `summary` for the console and the card. `forget_target_met` is True / False, or None when there is no reference."""
    reference, retain = judgement.describe_forget(), judgement.describe_retain()
    return {
        "forget_target_met": judgement.forget_met,
        "forget_status": judgement.status.value,
        "retain_kept": judgement.retain_kept,
        "kind": judgement.kind.value,
        "statistic": judgement.statistic,
        "p_value": judgement.p_value,
        "epoch": epoch,
        "reference": reference,
        "retain": retain,
        "stopped_because": stopped_because,
        "summary": f"{judgement.standing()} ({retain}); reference: {reference}; {stopped_because}.",
    }
