"""Evaluation model card (+ training-curve plot) for an unlearned model, from `unlearning_results.json`.

The Trainer's own `create_model_card` keeps only a fixed list of metric names in `model-index`, so the unlearning
metrics (`forget_accuracy`, `mia`, ...) would vanish: the card is built with `huggingface_hub.ModelCard` /
`ModelCardData(eval_results=[EvalResult(...)])` instead (docs/design.md §7 "Cards").

- `build_model_card(results, repo_id=..., model_name=...)`: the card (YAML metadata with a `model-index`, Markdown
  body) as a `ModelCard`; `results["warnings"]` are shown as warning blocks above the numbers.
- `history_figure(history, rewind_epoch)`: the training-curve figure (forget and forget-validation error on top,
  retain error on its own scale below) as a matplotlib `Figure`; `plot_history(history, rewind_epoch, path)` saves it
  as a PNG.
- `write_card(results, output_dir, repo_id=..., model_name=...)`: both, written atomically into `output_dir`
  (`README.md` + the PNG).

The card publishes aggregate numbers and the SHA-256 of the sorted forget ids, never the forgotten examples, never a
local filesystem path (only a path's last component: the name of a folder, not where it lies), and never a token-like
string (those are redacted defensively).
"""

from __future__ import annotations

import importlib.metadata
import math
import numbers
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .atomic import write_file

__all__ = [
    "PLOT_FILE",
    "build_model_card",
    "collect_library_versions",
    "history_figure",
    "plot_history",
    "strip_local_paths",
    "write_card",
]

PLOT_FILE = "unlearning_history.png"
CARD_FILE = "README.md"

# Distributions listed under "Framework versions" (distribution name -> label shown in the card).
LIBRARIES = {
    "hf-scrub": "hf_scrub",
    "transformers": "transformers",
    "torch": "torch",
    "datasets": "datasets",
    "accelerate": "accelerate",
    "peft": "peft",
    "huggingface_hub": "huggingface_hub",
}

# Hugging Face user / org tokens and similar secrets: never written to a card.
_TOKEN_RE = re.compile(r"\b(?:hf_|api_org_)[A-Za-z0-9]{8,}")
_SECRET_KEY_RE = re.compile(r"token|secret|password|api_key", re.IGNORECASE)
REDACTED = "[redacted]"

# Local paths. A value under a path-like key ("model", "dataset", "output_dir", "retrain_model_name_or_path", ...) that
# looks like a path is reduced to its last component; in any other string (and, defensively, in the whole card) an
# absolute path -- POSIX "/a/b", home "~/a", Windows "C:\\a" or "\\\\host\\share" -- is. A URL ("https://a/b"), a
# relative "path/to", a ratio "1/2" or an HTML end tag "</b>" is not an absolute path: the token must start a word.
# ("run_name": the Trainer's default run name is the output folder.)
_PATH_KEY_RE = re.compile(
    r"(?:^|_)(?:model|dataset|dir|path|folder|file|cache)s?(?:_|$)|name_or_path|^run_name$", re.IGNORECASE
)
_PATH_START = r"(?<![^\s(\[{\"'`=:,;])"
_PATH_PART = r"[^\s/\\'\"`()\[\]{}<>|,;*]"
_ABS_PATH_RE = re.compile(
    _PATH_START
    + r"(?:~?/"  # POSIX absolute or home-relative
    + _PATH_PART
    + r"+(?:/"
    + _PATH_PART
    + r"*)*|[A-Za-z]:[\\/](?:"  # Windows drive
    + _PATH_PART
    + r"|[\\/])*|\\\\"  # Windows UNC
    + _PATH_PART
    + r"+(?:[\\/]"
    + _PATH_PART
    + r"*)*)"
)
# A Hugging Face cache folder ("models--org--name"): its repository name is more telling than a snapshot hash.
_CACHE_DIR_RE = re.compile(r"^(?:models|datasets|spaces)--(?P<repo>.+)$")
UNNAMED_MODEL = "unlearned-model"

# "namespace/name" as on the Hub (a conservative check: single-segment legacy ids are treated as local names).
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")

CITATION = """\
@inproceedings{kurmanji2023towards,
  title         = {Towards Unbounded Machine Unlearning},
  author        = {Kurmanji, Meghdad and Triantafillou, Peter and Hayes, Jamie and Triantafillou, Eleni},
  booktitle     = {Advances in Neural Information Processing Systems},
  year          = {2023},
  eprint        = {2302.09880},
  archivePrefix = {arXiv}
}"""

_AUTO_CLASSES = {
    "image-classification": ("AutoModelForImageClassification", "AutoImageProcessor", "processor"),
    "text-classification": ("AutoModelForSequenceClassification", "AutoTokenizer", "tokenizer"),
    "causal-lm": ("AutoModelForCausalLM", "AutoTokenizer", "tokenizer"),  # a LoRA adapter folder loads alike (peft)
}

_METHOD_NAMES = {"scrub": "SCRUB"}


# --------------------------------------------------------------------------------------------------------------------
# Metric descriptions
# --------------------------------------------------------------------------------------------------------------------


class _Metric:
    """How one metric is labelled, formatted and judged in the card."""

    def __init__(
        self,
        label: str,
        dataset_name: str,
        split: str,
        good_class: str,
        good_selective: str | None = None,
        unit: str = "fraction",
    ):
        self.label = label
        self.dataset_name = dataset_name
        self.split = split
        self.good_class = good_class
        self.good_selective = good_selective or good_class
        self.unit = unit  # "fraction" (shown as %), "percent" (already a percentage) or "raw"


_MIA_DATASET = "forget set vs. held-out data of the same distribution"
_MUSE_MIA_DATASET = "MUSE privleak forget vs. holdout"
_TOFU_UTILITY_SETS = (("retain_qa", "retain set"), ("real_authors", "real authors"), ("world_facts", "world facts"))
_MIA_SCORES = (("loss", "LOSS"), ("zlib", "zlib"), ("min_k", "Min-K%"), ("min_k_plus_plus", "Min-K%++"))

METRICS: dict[str, _Metric] = {
    "forget_accuracy": _Metric(
        "Forget accuracy",
        "forget set",
        "forget",
        "close to Retrain's (≈ 0 % when whole classes are forgotten)",
        "close to Retrain's (about the accuracy on unseen data); 0 % would make the forget set stand out",
    ),
    "retain_accuracy": _Metric("Retain accuracy", "retain set", "retain", "high, close to Original's"),
    "test_accuracy": _Metric(
        "Test accuracy",
        "test set",
        "test",
        "close to Retrain's (the forgotten classes no longer count as correct)",
        "close to Retrain's and Original's",
    ),
    "forget_validation_accuracy": _Metric(
        "Forget-validation accuracy",
        "forget-validation set",
        "forget_validation",
        "close to Retrain's (≈ 0 % for forgotten classes)",
        "close to Retrain's: held-out data like the forget set, never trained on",
    ),
    "test_forget_classes_accuracy": _Metric(
        "Test accuracy, forgotten classes",
        "test set (forgotten classes)",
        "test",
        "close to Retrain's (≈ 0 %)",
        "close to Retrain's",
    ),
    "test_retain_classes_accuracy": _Metric(
        "Test accuracy, other classes",
        "test set (other classes)",
        "test",
        "close to Original's",
    ),
    "mia": _Metric(
        "MIA attack accuracy",
        _MIA_DATASET,
        "forget",
        "close to Retrain's",
        "close to 50 % (the attacker cannot tell forget from unseen data), as Retrain",
        unit="percent",
    ),
    "mia_auc": _Metric(
        "MIA attack AUC",
        _MIA_DATASET,
        "forget",
        "close to Retrain's",
        "close to 50 %, as Retrain",
        unit="percent",
    ),
    "forget_loss": _Metric(
        "Forget loss",
        "forget set",
        "forget",
        "mean cross-entropy; close to Retrain's (well above Original's)",
        "mean cross-entropy; close to Retrain's (above Original's, like unseen data)",
        unit="raw",
    ),
    # Causal LMs (hf_scrub.lm_evaluation): what the model says and what an attacker can still tell.
    "forget_answer_accuracy": _Metric(
        "Forgotten answers still produced (greedy)",
        "forget set",
        "forget",
        "close to Retrain's (the rate at which unseen facts are guessed)",
    ),
    "retain_answer_accuracy": _Metric(
        "Kept answers produced (greedy)", "retain set", "retain", "high, close to Original's"
    ),
    "forget_answer_probability": _Metric(
        "Forget answer probability", "forget set", "forget", "close to Retrain's", unit="raw"
    ),
    "retain_answer_probability": _Metric(
        "Retain answer probability", "retain set", "retain", "close to Original's", unit="raw"
    ),
    "forget_rouge_l_recall": _Metric("Forget ROUGE-L recall", "forget set", "forget", "close to Retrain's"),
    "retain_rouge_l_recall": _Metric("Retain ROUGE-L recall", "retain set", "retain", "close to Original's"),
    **{
        f"auc_{score}": _Metric(
            f"MIA ROC AUC ({label})", _MIA_DATASET, "forget", "close to Retrain's (0.5: no leak)", unit="raw"
        )
        for score, label in _MIA_SCORES
    },
    **{
        f"{prefix}privleak_{score}": _Metric(
            f"PrivLeak ({label}{where})",
            dataset,
            "forget",
            "close to 0 % (as leaky as Retrain; negative: the forget set still stands out, MUSE's sign)",
            unit="percent",
        )
        for prefix, where, dataset in (("", "", _MIA_DATASET), ("muse_", ", MUSE privleak split", _MUSE_MIA_DATASET))
        for score, label in _MIA_SCORES
    },
    **{
        f"muse_auc_{score}": _Metric(
            f"MIA ROC AUC ({label}, MUSE privleak split)",
            _MUSE_MIA_DATASET,
            "forget",
            "close to Retrain's",
            unit="raw",
        )
        for score, label in _MIA_SCORES
    },
    "forget_truth_ratio": _Metric(
        "Forget truth ratio (TOFU: mean of min(R, 1/R))",
        "forget set",
        "forget",
        "close to Retrain's (1: right and wrong answers equally likely)",
        unit="raw",
    ),
    **{
        key: _Metric(f"TOFU {set_name} ({what})", f"TOFU {set_name}", name, "close to Original's", unit=unit)
        for name, set_name in _TOFU_UTILITY_SETS
        for key, what, unit in (
            (f"{name}_answer_probability", "answer probability", "raw"),
            (f"{name}_normalised_probability", "P(right) / P(all options)", "raw"),
            (f"{name}_rouge_l_recall", "ROUGE-L recall", "fraction"),
            (f"{name}_truth_ratio", "truth ratio, mean of max(0, 1 - R)", "raw"),
        )
    },
    "model_utility": _Metric(
        "Model utility (TOFU: harmonic mean)",
        "TOFU retain / real authors / world facts",
        "retain",
        "close to Original's",
        unit="raw",
    ),  # fmt: skip
    "knowmem_forget_rouge_l_f1": _Metric(
        "KnowMem on forget set (MUSE, ROUGE-L F1)", "MUSE knowmem forget_qa", "forget", "close to Retrain's"
    ),
    "knowmem_retain_rouge_l_f1": _Metric(
        "KnowMem on retain set (MUSE, ROUGE-L F1)", "MUSE knowmem retain_qa", "retain", "close to Original's"
    ),
    "verbmem_forget_rouge_l_f1": _Metric(
        "VerbMem on forget set (MUSE, ROUGE-L F1)", "MUSE verbmem forget", "forget", "close to Retrain's"
    ),
    "forget_quality": _Metric(
        "Forget quality (KS p-value vs Retrain)",
        "forget set",
        "forget",
        "≥ 0.05 (truth ratios indistinguishable from Retrain's)",
        unit="raw",
    ),
    "generic_perplexity": _Metric(
        "Generic-text perplexity", "generic text", "generic", "close to Original's", unit="raw"
    ),
    "generic_perplexity_ratio": _Metric(
        "Generic-text perplexity / Original's", "generic text", "generic", "≤ 1.10", unit="raw"
    ),
}


def _metric_info(name: str) -> _Metric:
    if name in METRICS:
        return METRICS[name]
    unit = "fraction" if name.endswith(("accuracy", "error")) else "raw"
    return _Metric(name.replace("_", " ").capitalize(), "evaluation", "evaluation", "close to Retrain's", None, unit)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _format_gap(name: str, gap: float | None) -> str:
    """A difference in percentage points (or raw units for metrics that are neither fractions nor percentages)."""
    if gap is None:
        return "–"
    unit = _metric_info(name).unit
    if unit == "fraction":
        return f"{100 * gap:.2f} pp"
    return f"{gap:.2f} pp" if unit == "percent" else f"{gap:.4g}"


def _rounded_metric(name: str, value: Any) -> int | float:
    """A metric value for the YAML model-index, rounded as the card shows it (fractions to 4 decimals, i.e. 2 in %;
    percentages to 2 decimals; other values to 4 significant digits), as a plain int / float (no numpy scalars)."""
    if isinstance(value, numbers.Integral):
        return int(value)
    value, unit = float(value), _metric_info(name).unit
    if unit == "fraction":
        return round(value, 4) + 0.0  # + 0.0: no "-0.0"
    if unit == "percent":
        return round(value, 2) + 0.0
    return float(f"{value:.4g}") + 0.0


def _format_metric(name: str, value: Any) -> str:
    if not _is_number(value):
        return "–"
    unit = _metric_info(name).unit
    if unit == "fraction":
        return f"{100 * value:.2f} %"
    return f"{value:.2f} %" if unit == "percent" else f"{value:.4g}"


# --------------------------------------------------------------------------------------------------------------------
# Redaction and small helpers
# --------------------------------------------------------------------------------------------------------------------


def redact(obj: Any) -> Any:
    """A copy of `obj` with token-like strings replaced and string values of secret-looking keys dropped."""
    if isinstance(obj, str):
        return _TOKEN_RE.sub(REDACTED, obj)
    if isinstance(obj, Mapping):
        return {
            redact(str(key)) if isinstance(key, str) else key: redact(value)
            for key, value in obj.items()
            if not (isinstance(key, str) and _SECRET_KEY_RE.search(key) and isinstance(value, str))
        }
    if isinstance(obj, (list, tuple)):
        return [redact(item) for item in obj]
    return obj


def looks_like_hub_id(name: Any) -> bool:
    """True for `namespace/name` strings that are not an existing local path (a local path never goes to metadata)."""
    if not isinstance(name, str) or not _HUB_ID_RE.match(name) or ".." in name or name.endswith(".git"):
        return False
    return not os.path.exists(name)


def _local_name(path: str) -> str:
    """The last component of a local path (both separators), or the repository name of a Hub cache folder in it."""
    parts = [
        p for p in re.split(r"[\\/]+", path) if p not in ("", ".", "..", "~") and not re.fullmatch(r"[A-Za-z]:", p)
    ]
    for part in reversed(parts):
        match = _CACHE_DIR_RE.match(part)
        if match:  # "models--org--name" -> "name"
            return match.group("repo").split("--", 1)[-1]
    return parts[-1] if parts else ""


def _is_local_path(value: str) -> bool:
    """True for strings that name a local file or folder rather than a Hub id or a plain name."""
    if os.path.isabs(value) or value.startswith(("~", "./", "../", ".\\", "..\\")) or "\\" in value:
        return True
    if re.match(r"^[A-Za-z]:[\\/]", value) or value.count("/") >= 2 or value in (".", ".."):
        return True
    return ("/" in value or os.sep in value) and os.path.exists(value)


def _strip_paths_in_text(text: str) -> str:
    """`text` with every absolute path in it replaced by its last component."""
    return _ABS_PATH_RE.sub(lambda match: _local_name(match.group(0)) or "[path]", text)


def strip_local_paths(obj: Any, key: str | None = None) -> Any:
    """A copy of `obj` (a results dict) without local directories: path-like values under path-like keys become their
    last component (Hub ids and plain names stay), and absolute paths inside any other string are reduced alike."""
    if isinstance(obj, str):
        if key is not None and _PATH_KEY_RE.search(key) and _is_local_path(obj):
            return _local_name(obj) or "[path]"
        return _strip_paths_in_text(obj)
    if isinstance(obj, Mapping):
        return {
            strip_local_paths(k) if isinstance(k, str) else k: strip_local_paths(v, k if isinstance(k, str) else key)
            for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return [strip_local_paths(item, key) for item in obj]
    return obj


def _card_model_name(repo_id: str | None, model_name: str | None) -> str:
    """The unlearned model's name: the Hub repository's when pushing, else the output folder's, else a neutral one.

    Never derived from the original model's reference (`results["model"]`) or from a staging or cache folder: a
    hidden name ("." first, like a staging folder) or a cache folder name does not count.
    """
    for candidate in (repo_id, model_name):
        if not isinstance(candidate, str) or not candidate.strip():
            continue
        name = _TOKEN_RE.sub(REDACTED, candidate.strip().rstrip("/\\"))
        name = re.split(r"[\\/]", name)[-1]
        if name and not name.startswith(".") and not _CACHE_DIR_RE.match(name) and REDACTED not in name:
            return name
    return UNNAMED_MODEL


def _code(text: Any) -> str:
    """Inline code that survives backticks and table pipes."""
    text = str(text).replace("|", "\\|").replace("\n", " ")
    fence = "``" if "`" in text else "`"
    return f"{fence}{text}{fence}"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _format_value(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_format_value(v) for v in value) or "–"
    return str(value)


def _format_seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def collect_library_versions() -> dict[str, str]:
    """Installed versions of the libraries the card lists ("not installed" when missing)."""
    versions = {}
    for dist, label in LIBRARIES.items():
        try:
            versions[label] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[label] = "not installed"
    return versions


# --------------------------------------------------------------------------------------------------------------------
# Plot
# --------------------------------------------------------------------------------------------------------------------


# (forget-side panel) key, label, colour, marker, marker size, marker face, line style, z-order: the forget curve is
# drawn first with large open circles, the forget-validation curve on top with small filled triangles and dashes, so
# where the two coincide (both ≈ 100 % after class forgetting) both stay visible.
_FORGET_SERIES = (
    ("forget_error", "forget", "#d62728", "o", 9, "none", "-", 3),
    ("forget_validation_error", "forget-validation (held out)", "#2ca02c", "^", 5, "#2ca02c", "--", 4),
)
_RETAIN_SERIES = (("retain_error", "retain", "#1f77b4", "s", 6, "#1f77b4", "-", 3),)


def history_figure(history: Sequence[Mapping[str, Any]], rewind_epoch: int | None) -> Any:
    """The training-curve figure of `history` (a matplotlib `Figure` with an Agg canvas); epoch 0 is the original.

    Two panels sharing the epoch axis: forget and forget-validation error (%, 0-100) on top, retain error (%) below on
    its own scale (it stays small next to the forget error, its changes would be invisible on a 0-100 axis). Each
    curve is a `Line2D` whose gid is its history key (`forget_error`, ...) and whose y-data are the history's values in
    %. `rewind_epoch` (SCRUB+R's choice) is a vertical line (gid `rewind_epoch`) in both panels plus a label, and the
    rewind target (the final model's forget-validation error) a dotted horizontal line (gid `rewind_target`).
    Matplotlib's object API (no pyplot, no display, no global backend switch).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    if not history:
        raise ValueError("plot_history needs at least one epoch in `history`.")
    rows = sorted(history, key=lambda row: row["epoch"])
    epochs = [row["epoch"] for row in rows]

    fig = Figure(figsize=(7.0, 5.6), dpi=150, layout="constrained")
    FigureCanvasAgg(fig)
    ax_forget, ax_retain = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])

    def draw(ax: Any, series: Sequence[tuple]) -> list[float]:
        drawn: list[float] = []
        for key, label, color, marker, size, face, style, order in series:
            points = [(row["epoch"], 100 * row[key]) for row in rows if _is_number(row.get(key))]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(
                    xs,
                    ys,
                    label=label,
                    gid=key,
                    color=color,
                    marker=marker,
                    markersize=size,
                    markerfacecolor=face,
                    markeredgewidth=1.6,
                    linestyle=style,
                    linewidth=2,
                    zorder=order,
                )
                drawn += ys
        return drawn

    draw(ax_forget, _FORGET_SERIES)
    retain = draw(ax_retain, _RETAIN_SERIES)

    if rewind_epoch is not None:
        reference = rows[-1].get("forget_validation_error")
        if _is_number(reference):
            ax_forget.axhline(
                100 * reference,
                color="#2ca02c",
                linestyle=":",
                linewidth=1.2,
                label="rewind target",
                gid="rewind_target",
                zorder=2,
            )
        for ax in (ax_forget, ax_retain):
            ax.axvline(rewind_epoch, color="#555555", linestyle="-.", linewidth=1.5, gid="rewind_epoch", zorder=1)
        chosen = "original model" if rewind_epoch == 0 else f"epoch {rewind_epoch}"
        ax_forget.annotate(
            f"SCRUB+R keeps {chosen}",
            xy=(rewind_epoch, 0.5),
            xycoords=("data", "axes fraction"),
            xytext=(6, 0),
            textcoords="offset points",
            rotation=90,
            va="center",
            fontsize=10,
            color="#333333",
            bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none", "alpha": 0.85},
            zorder=2.5,  # under the curves: the label never hides a point
        )

    ax_forget.set_title("SCRUB: error per epoch", fontsize=12)
    ax_forget.set_ylabel("forget-side error (%)", fontsize=11)
    ax_forget.set_ylim(-4, 104)
    ax_retain.set_ylabel("retain error (%)", fontsize=11)
    if not retain:
        ax_retain.text(0.5, 0.5, "no retain error recorded", transform=ax_retain.transAxes, ha="center", va="center")
    top = max([*retain, 0.0])
    top = top if top > 0 else 1.0  # all zero (or none): still a readable 0-1 % axis
    ax_retain.set_ylim(-0.06 * top, 1.15 * top)
    ax_retain.set_xlabel("epoch (0 = original model)", fontsize=11)
    ax_retain.set_xlim(min(epochs) - 0.25, max(epochs) + 0.25)
    ax_retain.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (ax_forget, ax_retain):
        ax.tick_params(labelsize=10)
        ax.grid(True, alpha=0.3)
    # Legend: the curves (forget, forget-validation, retain), then the rewind target.
    handles = sorted(
        (line for ax in (ax_forget, ax_retain) for line in ax.get_lines() if not line.get_label().startswith("_")),
        key=lambda line: line.get_gid() == "rewind_target",
    )
    fig.legend(handles=handles, loc="outside lower center", ncols=4, fontsize=9, frameon=False)
    return fig


def plot_history(history: Sequence[Mapping[str, Any]], rewind_epoch: int | None, path: str | Path) -> Path:
    """`history_figure(history, rewind_epoch)` as a PNG at `path`, written atomically; returns `path`.

    The PNG carries no software/date metadata, so the same input gives the same bytes.
    """
    fig = history_figure(history, rewind_epoch)
    path = Path(path)
    write_file(path, lambda tmp: fig.savefig(tmp, format="png", metadata={"Software": None}))
    return path


# --------------------------------------------------------------------------------------------------------------------
# Card
# --------------------------------------------------------------------------------------------------------------------


def _eval_results(results: Mapping[str, Any]) -> list[EvalResult]:
    task = results.get("task") or "unlearning"
    dataset = results.get("dataset")
    dataset_type = dataset if looks_like_hub_id(dataset) else "unlearning-splits"
    evals = []
    for name, value in (results.get("unlearned") or {}).items():
        if not _is_number(value):
            continue
        info = _metric_info(name)
        evals.append(
            EvalResult(
                task_type=task,
                dataset_type=dataset_type,
                dataset_name=info.dataset_name,
                dataset_split=info.split,
                metric_type=name,
                metric_name=info.label,
                metric_value=_rounded_metric(name, value),
            )
        )
    return evals


def _model_reference(model: Any) -> str:
    if looks_like_hub_id(model):
        return f"[`{model}`](https://huggingface.co/{model})"
    if isinstance(model, str) and model:
        # Only the folder name: the full local path (home directories, user names) is not published.
        return f"a local model ({_code(_local_name(model) or 'unnamed')}, not on the Hub)"
    return "an unnamed model"


def _classes_with_names(forget: Mapping[str, Any]) -> list[tuple[Any, Any]]:
    """(class id, class name or None when unknown or equal to the id) for each forgotten class."""
    classes = list(forget.get("classes") or [])
    names = list(forget.get("class_names") or [])
    names = (names + [None] * len(classes))[: len(classes)]
    return [(c, n if n is not None and str(n) != str(c) else None) for c, n in zip(classes, names, strict=True)]


def _forgotten_phrase(forget: Mapping[str, Any]) -> str:
    count = forget.get("num_examples")
    count_text = f"{count} training examples" if _is_number(count) else "a set of training examples"
    classes = _classes_with_names(forget)
    which = ", ".join(f"{c} ({n})" if n is not None else str(c) for c, n in classes)
    if forget.get("type") == "class" and classes:
        noun = "class" if len(classes) == 1 else "classes"
        return f"{count_text}: the whole {noun} {which}"
    if classes:
        return f"{count_text} selected from class{'es' if len(classes) > 1 else ''} {which}"
    return count_text


def _summary(results: Mapping[str, Any], method: str) -> str:
    forget = results.get("forget") or {}
    original, unlearned = results.get("original") or {}, results.get("unlearned") or {}
    retrain = results.get("retrain") or {}
    text = (
        f"This model is {_model_reference(results.get('model'))} after **machine unlearning** with {method} "
        f"(Kurmanji et al., [*Towards Unbounded Machine Unlearning*](https://arxiv.org/abs/2302.09880), NeurIPS 2023) "
        f"using `hf_scrub`: it was made to forget {_forgotten_phrase(forget)}, so that it "
        f"behaves as if they had not been in its training data."
    )
    parts = []
    if "forget_answer_accuracy" in unlearned:  # a causal LM: what it says, not its next-token accuracy
        keys: tuple[str, ...] = ("forget_answer_accuracy", "retain_answer_accuracy", "forget_quality")
    else:
        keys = ("forget_accuracy", "retain_accuracy", "test_accuracy")
    for key in keys:
        if _is_number(original.get(key)) and _is_number(unlearned.get(key)):
            part = f"{_metric_info(key).label.lower()} {_format_metric(key, original[key])} → "
            part += _format_metric(key, unlearned[key])
            if _is_number(retrain.get(key)):
                part += f" (retrained from scratch: {_format_metric(key, retrain[key])})"
            parts.append(part)
    if parts:
        text += " Original → unlearned: " + "; ".join(parts) + "."
    return text


def _metrics_table(results: Mapping[str, Any], selective: bool) -> str:
    models = [("Original", results.get("original") or {}), ("Unlearned", results.get("unlearned") or {})]
    retrain = results.get("retrain")
    if retrain:
        models.append(("Retrain", retrain))
    names: list[str] = [name for name in METRICS if any(name in m for _, m in models)]
    for _, model in models:
        names += [n for n, v in model.items() if n not in names and _is_number(v)]

    header = ["Metric", *(label for label, _ in models)]
    if retrain:
        header.append("\\|Unlearned − Retrain\\|")
    header.append("Good unlearning")
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join([":---"] + ["---:"] * (len(header) - 2) + [":---"]) + "|",
    ]
    for name in names:
        info = _metric_info(name)
        row = [f"{info.label} (`{name}`)", *(_format_metric(name, model.get(name)) for _, model in models)]
        if retrain:
            u, r = models[1][1].get(name), retrain.get(name)
            gap = abs(u - r) if _is_number(u) and _is_number(r) else None
            row.append(_format_gap(name, gap))
        row.append(info.good_selective if selective else info.good_class)
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return "\n".join(lines)


def _forget_section(forget: Mapping[str, Any]) -> str:
    kind = forget.get("type")
    kinds = {
        "class": "whole classes",
        "selective": "randomly selected examples",
        "indices": "examples given by row position",
        "ids": "examples given by id",
        "column": "examples flagged by a boolean column",
        "splits": "a ready-made forget split",
    }
    lines = [f"- **Type:** {_code(kind)} ({kinds[kind]})" if kind in kinds else f"- **Type:** {_code(kind)}"]
    classes = _classes_with_names(forget)
    if classes:
        shown = ", ".join(f"{_code(c)} ({_code(n)})" if n is not None else _code(c) for c, n in classes)
        lines.append(f"- **Classes:** {shown}")
    counts = [
        ("num_examples", "Forgotten examples"),
        ("num_retain_examples", "Retain examples"),
        ("num_test_examples", "Test examples"),
        ("num_forget_validation_examples", "Forget-validation examples (held out, like the forget set)"),
    ]
    lines += [f"- **{label}:** {forget[key]}" for key, label in counts if key in forget]
    digest = forget.get("forget_ids_sha256")
    if digest:
        lines.append(
            f"- **SHA-256 of the sorted forget ids:** `{digest}` — check a deletion request against this model "
            "without publishing the examples."
        )
    lines.append("")
    lines.append("The forgotten examples themselves are not published with this model.")
    return "\n".join(lines)


def _run_section(results: Mapping[str, Any]) -> str:
    out = []
    hyper = results.get("hyperparameters") or {}
    if hyper:
        out += ["| Hyperparameter | Value |", "|:---|:---|"]
        out += [f"| `{_cell(key)}` | {_cell(_format_value(value))} |" for key, value in hyper.items()]
        out.append("")

    seconds, retrain_seconds = results.get("unlearning_seconds"), results.get("retrain_seconds")
    if _is_number(seconds):
        line = f"**Wall time:** unlearning took {_format_seconds(seconds)}"
        if _is_number(retrain_seconds) and retrain_seconds > 0:
            ratio = seconds / retrain_seconds
            line += f"; retraining from scratch without the forget set took {_format_seconds(retrain_seconds)}"
            line += f", so unlearning cost {ratio:.2f}× the retraining time"
            if seconds > 0:
                line += f" ({retrain_seconds / seconds:.1f}× faster)"
        out += [line + ".", ""]

    rewind_epoch = results.get("rewind_epoch")
    history = {row.get("epoch"): row for row in results.get("history") or []}
    if rewind_epoch is not None:
        line = f"**SCRUB+R (rewind):** the returned model is the one after **epoch {rewind_epoch}**"
        if rewind_epoch == 0:
            line += " — the original model itself (no epoch came closer to the rewind target)"
        line += ": of all epochs, its forget error"
        chosen, last = history.get(rewind_epoch), history.get(max(history)) if history else None
        if chosen and _is_number(chosen.get("forget_error")):
            line += f" ({100 * chosen['forget_error']:.2f} %)"
        line += " is closest to the final model's error on held-out forget-distribution data"
        if last and _is_number(last.get("forget_validation_error")):
            line += f" ({100 * last['forget_validation_error']:.2f} %)"
        out += [line + ".", ""]
    elif hyper.get("rewind"):
        out += ["**SCRUB+R (rewind):** enabled, but no epoch was recorded as chosen.", ""]

    relearn = results.get("relearn_time")
    if isinstance(relearn, Mapping) and relearn:
        epochs, max_epochs = relearn.get("epochs"), relearn.get("max_epochs")
        line = "**Relearn time** (fine-tuning on the forget set until its loss is back to the original model's"
        if _is_number(relearn.get("target_loss")):
            line += f", {relearn['target_loss']:.4g}"
        line += "): "
        if _is_number(epochs):
            line += f"{epochs} epoch{'s' if epochs != 1 else ''}"
        else:
            line += "not relearned" + (f" within {max_epochs} epochs" if _is_number(max_epochs) else "")
        losses = relearn.get("forget_losses")
        if isinstance(losses, list) and losses and all(_is_number(v) for v in losses):
            line += " (forget loss per epoch, from 0: " + ", ".join(f"{v:.4g}" for v in losses) + ")"
        out += [line + ". The longer, the more deeply the forget set was unlearned.", ""]
    return "\n".join(out).strip()


def _history_section(history: Sequence[Mapping[str, Any]], rewind_epoch: int | None, plot_file: str) -> str:
    has_fv = any(_is_number(row.get("forget_validation_error")) for row in history)
    lines = [
        f"![Forget, retain and forget-validation error per SCRUB epoch; epoch 0 is the original model]({plot_file})",
        "",
        "<details><summary>Errors per epoch (epoch 0 = original model)</summary>",
        "",
        "| Epoch | Forget error | Retain error |" + (" Forget-validation error |" if has_fv else ""),
        "|---:|---:|---:|" + ("---:|" if has_fv else ""),
    ]
    for row in sorted(history, key=lambda r: r["epoch"]):
        cells = [str(row["epoch"]) + (" (SCRUB+R)" if row["epoch"] == rewind_epoch else "")]
        keys = ["forget_error", "retain_error"] + (["forget_validation_error"] if has_fv else [])
        cells += [f"{100 * row[k]:.2f} %" if _is_number(row.get(k)) else "–" for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "</details>"]
    return "\n".join(lines)


def _warning_items(results: Mapping[str, Any]) -> list[str]:
    """`results["warnings"]` and `results["verdict"]["warnings"]` (a string or a list of them), each as one line."""
    verdict = results.get("verdict")
    sources = [results.get("warnings"), verdict.get("warnings") if isinstance(verdict, Mapping) else None]
    items: list[str] = []
    for source in sources:
        for item in [source] if isinstance(source, str) else source if isinstance(source, (list, tuple)) else []:
            text = " ".join(str(item).split())  # one line: a warning cannot end the block or start a heading
            if text and text not in items:
                items.append(text)
    return items


def _verdict_section(results: Mapping[str, Any]) -> str:
    """The run's verdict (`hf_scrub.verdict`) in one line, first, so that nobody reads the numbers without it."""
    verdict = results.get("verdict")
    if not isinstance(verdict, Mapping) or not verdict.get("summary"):
        return ""
    return f"**Verdict:** {' '.join(str(verdict['summary']).split())}"


def _warnings_section(results: Mapping[str, Any]) -> str:
    """One blockquote per warning, shown above the numbers so that nobody reads them without it."""
    return "\n\n".join(f"> ⚠️ **Warning:** {text}" for text in _warning_items(results))


def _usage_section(task: str | None, repo_id: str | None) -> str:
    model_cls, proc_cls, proc_var = _AUTO_CLASSES.get(task or "", ("AutoModel", "AutoProcessor", "processor"))
    where = repo_id or "path/to/this/folder"
    return "\n".join(
        [
            "```python",
            f"from transformers import {proc_cls}, {model_cls}",
            "",
            f'model = {model_cls}.from_pretrained("{where}")',
            f'{proc_var} = {proc_cls}.from_pretrained("{where}")',
            "```",
            "",
            "`unlearning_results.json` next to the weights holds every number on this card.",
        ]
    )


def build_model_card(
    results: Mapping[str, Any],
    *,
    repo_id: str | None = None,
    model_name: str | None = None,
    plot_file: str = PLOT_FILE,
    library_versions: Mapping[str, str] | None = None,
) -> ModelCard:
    """The evaluation card of an unlearning run (`unlearning_results.json` as a dict) as a `ModelCard`.

    The unlearned model's name (title and `model-index` name) is `repo_id`'s name part when the model is pushed
    (`--hub_model_id`), else `model_name` (the pipeline passes the final output folder's name; a path is reduced to
    its last component), else "unlearned-model" -- never the original model's name, nor a staging or cache folder's.
    Metadata: `base_model` (only when `results["model"]`, the original model, looks like a Hub id, never a local path),
    `library_name="transformers"`, tags, and a `model-index` with one `EvalResult` per metric of the unlearned model,
    custom metric types kept (`forget_accuracy`, `mia`, ...; fractions rounded to 4 decimals, MIA in % to 2).
    `results["warnings"]` (and `results["verdict"]["warnings"]`) appear as warning blocks right under the title.
    No local path appears anywhere: a path is reduced to its last component.
    The body links `plot_file` (relative) when `results` has a `history`; `write_card` writes that plot.
    """
    if Path(plot_file).is_absolute() or ".." in Path(plot_file).parts:
        raise ValueError(f"plot_file must be a relative path inside the output folder, got {plot_file!r}.")
    original_model = results.get("model")
    results = strip_local_paths(redact(dict(results)))
    task = results.get("task")
    forget = results.get("forget") or {}
    hyper = results.get("hyperparameters") or {}
    selective = forget.get("type") != "class"
    method = _METHOD_NAMES.get(str(results.get("method", "scrub")).lower(), str(results.get("method")))
    if results.get("rewind_epoch") is not None or hyper.get("rewind"):
        method += "+R"

    # Decided on the reference as given: a Hub-id-shaped string that is a local folder is a local path.
    base_model = original_model if looks_like_hub_id(original_model) else None
    if base_model is None and looks_like_hub_id(results.get("model")):
        results["model"] = _local_name(str(results["model"]))  # shown as a plain local name, not linked
    model_name = _card_model_name(repo_id, model_name)
    tags = ["machine-unlearning", "scrub", "hf-scrub"] + (["scrub-r"] if method.endswith("+R") else [])
    tags += [task] if task else []
    dataset = results.get("dataset")
    card_data = ModelCardData(
        base_model=base_model,
        library_name="transformers",
        pipeline_tag=task if task in _AUTO_CLASSES else None,
        tags=tags,
        datasets=[dataset] if looks_like_hub_id(dataset) else None,
        model_name=model_name,
        eval_results=_eval_results(results) or None,
    )

    versions = dict(library_versions) if library_versions is not None else collect_library_versions()
    if results.get("hf_scrub_version") and library_versions is None:
        versions["hf_scrub"] = str(results["hf_scrub_version"])  # the version that ran the unlearning

    sections = [
        f"# {model_name}",
        _verdict_section(results),
        _warnings_section(results),
        _summary(results, method),
        "## Evaluation",
        "Accuracies in %. **MIA**: the paper's loss-based membership-inference attack, telling forget examples from "
        "held-out examples of the same distribution (cross-validated accuracy and AUC, %; 50 % = it cannot tell them "
        "apart). **Retrain** (when present) is a model trained from scratch without the forget set: the gold standard "
        "the unlearned model should match.",
        _metrics_table(results, selective),
        "## What was forgotten",
        _forget_section(forget),
        "## Unlearning run",
        f"Method: {method} with a frozen copy of the original model as teacher. Original model: "
        f"{_model_reference(results.get('model'))}.",
        _run_section(results),
    ]
    history = results.get("history")
    if history:
        sections += ["## Training curves", _history_section(history, results.get("rewind_epoch"), plot_file)]
    sections += [
        "## How to use",
        _usage_section(task, repo_id),
        *(["## Framework versions", "\n".join(f"- {name}: {v}" for name, v in versions.items())] if versions else []),
        "## Citation",
        "```bibtex\n" + CITATION + "\n```",
    ]
    body = "\n\n".join(s for s in sections if s) + "\n"
    content = f"---\n{card_data.to_yaml()}\n---\n\n{body}"
    # Defensively, once more over everything: no token, no absolute local path.
    return ModelCard(_strip_paths_in_text(_TOKEN_RE.sub(REDACTED, content)))


# --------------------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------------------


def write_card(
    results: Mapping[str, Any],
    output_dir: str | Path,
    *,
    repo_id: str | None = None,
    model_name: str | None = None,
    plot_file: str = PLOT_FILE,
    library_versions: Mapping[str, str] | None = None,
) -> Path:
    """Write `output_dir/README.md` (and the history plot when `results` has a `history`); return the README path.

    The keyword arguments are `build_model_card`'s. `output_dir` may be a staging folder: its name is never used;
    pass the final folder's name as `model_name`. Each file is written atomically.
    """
    output_dir = Path(output_dir)
    card = build_model_card(
        results, repo_id=repo_id, model_name=model_name, plot_file=plot_file, library_versions=library_versions
    )
    if results.get("history"):
        plot_history(results["history"], results.get("rewind_epoch"), output_dir / plot_file)
    readme = output_dir / CARD_FILE
    text = str(card)
    write_file(readme, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return readme
