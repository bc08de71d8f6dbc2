"""SMILE masked CLIP-feature distillation trainer (see the pretraining issue)."""
