"""`Clip` moved to the core (`smile_synth.clip`); this re-export stays for one release."""
from smile_synth.clip import Clip, boxes_from_masks, labels_to_masks, masks_to_labels

__all__ = ["Clip", "boxes_from_masks", "labels_to_masks", "masks_to_labels"]
