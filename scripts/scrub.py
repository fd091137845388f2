#!/usr/bin/env python
"""Unlearn a forget set from a Hugging Face classifier with SCRUB.

    accelerate launch scripts/scrub.py                      # the embedded offline demo (MNIST, forget digit 3)
    accelerate launch scripts/scrub.py --model_name_or_path <hub id or folder> --dataset_name <hub id or folder> \
        --forget_classes 3 --preset class --output_dir out
    accelerate launch scripts/scrub.py run.yaml              # every argument from one YAML/JSON file

All arguments: `python scripts/scrub.py --help`. The work is done by `hf_scrub.pipeline.run_unlearning`.
"""

import sys

from hf_scrub.cli import main

if __name__ == "__main__":
    sys.exit(main())
