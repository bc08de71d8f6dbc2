"""End-to-end fine-tuning (VideoMAE's protocol): `smile-synth finetune` and `compare --probe finetune`.

model.py: the classifier (VideoMAE's fine-tuning ViT layout); the rest is the recipe, data and loop.
"""
from .model import VideoClassifier, build_classifier, load_into_classifier  # noqa: F401
