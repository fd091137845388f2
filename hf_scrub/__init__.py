"""hf_scrub: machine unlearning with SCRUB for Hugging Face models."""

__version__ = "0.1.0"
