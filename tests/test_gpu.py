"""GPU checks (issue 5): mixed precision, exact accumulation and LoRA memory on CUDA, through tests/gpu_check.py.

Skipped without a CUDA device (CI has none); on a GPU machine run `python -m pytest -m gpu tests/test_gpu.py`.
The same script prints the numbers reported in BENCHMARKS.md.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (bf16/fp16 autocast, GPU memory)"),
]
SCRIPT = Path(__file__).with_name("gpu_check.py")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu") / "gpu_check.json"
    subprocess.run(
        [sys.executable, str(SCRIPT), "--only", "env", "precision", "accumulation", "memory", "--out", str(out)],
        check=True, timeout=600, capture_output=True,
    )  # fmt: skip
    return json.loads(out.read_text())


def test_no_section_failed(report):
    assert report["errors"] == {}


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_mixed_precision_trains_finite_with_float32_losses(report, precision):
    run = report["precision"][precision]
    # The first max-step runs at student == teacher: d = 0 up to round-off (0.0 measured on an H100). On another
    # GPU the train- and eval-mode forwards may take different kernels; float32 resolves T^2 * KL to ~1e-6, and
    # half-precision logits (~2^-8 relative round-off, d ~ Var(dz) / 2) stay far below 1e-4: allow 1e-5 / 1e-4.
    assert run["finite"] and run["kl_float32"]
    assert run["first_forget_kl"] == pytest.approx(0.0, abs=1e-5 if precision == "fp32" else 1e-4)
    assert run["dtypes"]["losses"] == ["float32"] and run["dtypes"]["teacher_logits"] == ["float32"]
    if precision != "fp32":
        assert run["dtypes"]["student_inner"] == [{"bf16": "bfloat16", "fp16": "float16"}[precision]]
        assert run["l2_weight_diff_over_fp32_update"] < 0.05  # within 5% of how far fp32 training moved


def test_gradient_accumulation_is_exact_on_gpu(report):
    accumulation = report["accumulation"]
    assert accumulation["median_logged_loss_ratio_ga2_over_ga1"] == pytest.approx(1.0, abs=1e-3)
    assert accumulation["max_abs_weight_diff"] < 1e-5


def test_lora_teacher_holds_no_second_copy(report):
    for model in ("bert256", "minilm"):
        memory = report["memory"][model]
        assert memory["lora_adapter_disabled"]["teacher"] == "AdapterDisabledTeacher"
        assert memory["lora_over_full_peak"] < 0.75
