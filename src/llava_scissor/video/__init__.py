"""Video input: probe a file and sample frames uniformly with PyAV.

Needs the ``video`` extra (``pip install 'llava-scissor[video]'``: PyAV and numpy).
Reads mp4, webm, mkv, avi, gif and whatever else the FFmpeg inside PyAV can demux.
Frames are decoded one by one and only the sampled ones are converted to RGB and
kept; long videos are read by seeking near each sampled frame, so memory holds
``num_frames`` frames, never the whole file (and a request is checked against the
available memory before decoding). A stream that ends before its header says is sampled
from the frames that decode, and the clip says so.
"""

from ._decode import Clip, VideoInfo, check_request, memory_limit, probe, read_video, sample_indices

__all__ = ["Clip", "VideoInfo", "check_request", "memory_limit", "probe", "read_video", "sample_indices"]
