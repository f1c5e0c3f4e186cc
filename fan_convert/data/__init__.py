"""The data pipeline: videos in, batches of multi-view clips out.

- :mod:`.readers`: where the videos are (class folders, annotation lists) as labelled items;
- :mod:`.decoding`: videos and frame folders to uint8 frames, only the frames a sampler asks for;
- :mod:`.sampling`: TSN segment sampling, which frames make each frame count's view;
- :mod:`.datasets`: :class:`MultiViewClips` (one read serves every view) and :func:`collate_views`,
  which drops and names the videos that could not be read;
- :mod:`.synthetic`: :class:`TemporalBenchmark`, the built-in benchmark that needs no files.

Example::

    from fan_convert.data import MultiViewClips, collate_views, video_folder
    items, classes = video_folder("kinetics/train")
    train = MultiViewClips(items, (4, 8, 16), train=True, crop_size=112, flip=True)

This package sits below :mod:`fan_convert.train` and does not import it.
"""

from .datasets import KINETICS_MEAN, KINETICS_STD, MultiViewClips, SkipCount, Skipped, collate_views, skip_report
from .decoding import IMAGE_SUFFIXES, DecodeError, SampledFrames, decode, read_sampled
from .readers import VIDEO_SUFFIXES, DataError, Item, VideoFolder, annotation_list, read_items, scan_video_folder, video_folder
from .sampling import multi_view_indices, segment_indices
from .synthetic import TemporalBenchmark

__all__ = [
    # datasets and batching
    "MultiViewClips", "TemporalBenchmark", "collate_views", "SkipCount", "Skipped", "skip_report",
    "KINETICS_MEAN", "KINETICS_STD",
    # where the videos are
    "Item", "VideoFolder", "DataError", "VIDEO_SUFFIXES", "video_folder", "scan_video_folder", "annotation_list", "read_items",
    # decoding
    "IMAGE_SUFFIXES", "DecodeError", "SampledFrames", "decode", "read_sampled",
    # sampling
    "multi_view_indices", "segment_indices",
]
