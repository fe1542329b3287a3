"""Pictures of a compression: which tokens became which output token.

Needs Pillow and numpy (``pip install 'llava-scissor[video]'``). Each token cell of
each sampled frame is tinted with the colour of the output token it was merged into
(one colour per output token, the same in every frame), borders between different
output tokens are drawn, and a panel shows the tokens per frame after the spatial
step and the overall retention.

    from llava_scissor.viz import save
    save("out.png", clip.frames, result)       # or .gif, .html
"""

from ._draw import component_colors, frame_labels, legend, render, render_frames, save, spatial_counts

__all__ = ["component_colors", "frame_labels", "legend", "render", "render_frames", "save", "spatial_counts"]
