"""Reading natural videos (core): list files and folders (`lists`), per-process caches (`cache`), and
PyAV decoding with cached whole decodes or seeking partial ones (`decode`).

``read_video_list / natural_items -> video_length -> decode_frames``; problems with one video raise
``BadVideo``, mistakes in a list raise ``UserError``.
"""
from .cache import clear_caches
from .decode import BadVideo, TooFewFrames, decode_frames, decoded_frames, video_length
from .lists import VIDEO_EXTENSIONS, VideoItem, by_class_name, folder_classes, natural_items, read_video_list

__all__ = ["VIDEO_EXTENSIONS", "BadVideo", "TooFewFrames", "VideoItem", "by_class_name", "clear_caches", "decode_frames", "decoded_frames",
           "folder_classes",
           "natural_items", "read_video_list", "video_length"]
