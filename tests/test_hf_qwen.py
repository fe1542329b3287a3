"""The 3-D rotary families (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5, GLM-4V): positions
survive compression.

Output video tokens carry the (t, h, w) positions of their representatives in the
uncompressed sequence; text tokens keep theirs; decoding continues exactly where the
uncompressed model's decoding would (both in ``generate`` and in a hand-written decode
step that relies on ``rope_deltas``).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

pytest.importorskip("transformers")

import hf_models as H  # noqa: E402
from test_hf_integration import NEW, _generate, _inputs, lm_calls  # noqa: E402

from llava_scissor.integrations.hf import build_video_inputs, get_family, prepare  # noqa: E402

QWEN = list(H.MROPE)


@pytest.fixture(scope="module", params=QWEN)
def qwen(request: Any) -> tuple[str, Any, Any]:
    model = H.tiny_model(request.param)
    return request.param, model, H.tiny_parts(request.param, model)


def test_positions_are_those_of_representatives(qwen: Any) -> None:
    model_type, model, parts = qwen
    inputs = _inputs(model_type, parts, [4, 8])  # two rows, different lengths, left padding
    family = get_family(model)
    full = family.original_positions(model, inputs)  # [3, B, L]
    prepared = prepare(model, inputs, retention=0.3)
    positions = prepared["position_ids"]  # [4, B, L']
    assert positions.shape[:2] == (4, 2) and positions.shape[2] == prepared["input_ids"].shape[1]
    old_video, new_video = family.video_token_mask(model, inputs), family.video_token_mask(model, prepared)
    for stats in prepared.stats:
        row = stats.row
        run = old_video[row].nonzero().squeeze(1)  # one video per row
        reps = stats.result.representatives[stats.order]
        got = positions[1:, row, stats.positions]
        assert torch.equal(got, full[:, row, run[reps]])
        # text tokens (timestamps and markers too) keep their uncompressed positions, in order
        old_text = (inputs["attention_mask"][row] == 1) & ~old_video[row]
        new_text = (prepared["attention_mask"][row] == 1) & ~new_video[row]
        assert torch.equal(positions[1:, row][:, new_text], full[:, row][:, old_text])
        # the text channel counts real tokens
        n = int(prepared["attention_mask"][row].sum())
        assert torch.equal(positions[0, row][prepared["attention_mask"][row] == 1], torch.arange(n))
    with lm_calls(model) as calls, torch.no_grad():
        model(**prepared)
    assert torch.equal(calls[0]["position_ids"], positions)


def test_decoding_positions_continue_as_uncompressed(qwen: Any) -> None:
    model_type, model, parts = qwen
    inputs = _inputs(model_type, parts, [4, 8])
    with lm_calls(model) as plain:
        _generate(model, inputs)
    with lm_calls(model) as compressed:
        _generate(model, prepare(model, inputs, retention=0.3))
    assert len(plain) == len(compressed) == NEW
    for step in range(1, NEW):  # every decode step: same rotary positions as uncompressed
        assert torch.equal(compressed[step]["position_ids"][1:], plain[step]["position_ids"][1:])
    # and they continue right after the prompt's last token
    last = compressed[0]["position_ids"][1:, :, -1]
    assert torch.equal(compressed[1]["position_ids"][1:, :, 0], last + 1)


def test_rope_deltas_drive_a_manual_decode_step(qwen: Any) -> None:
    model_type, model, parts = qwen
    inputs = _inputs(model_type, parts, [4])
    prepared = prepare(model, inputs, retention=0.3)
    generated = _generate(model, prepared)
    prepared = prepare(model, inputs, retention=0.3)  # sets rope_deltas for this batch
    suppressed = list(model.generation_config.suppress_tokens or [])  # as generate does

    def greedy(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, -1].index_fill(-1, torch.tensor(suppressed, dtype=torch.long), float("-inf")).argmax(-1)

    with torch.no_grad():
        out = model(**prepared, use_cache=True)
        first = greedy(out.logits)[:, None]
        # no position_ids: the model derives them from the cache length and rope_deltas
        # (one prompt without padding, so no attention mask is needed either)
        step = model(input_ids=first, cache=out.cache, use_cache=True)
    second = greedy(step.logits)
    assert torch.equal(torch.stack([first[0, 0], second[0]]), generated[0, -NEW : -NEW + 2])


def test_images_in_the_same_prompt_are_untouched(qwen: Any) -> None:
    model_type, model, parts = qwen
    if model_type.startswith("glm"):
        pytest.skip("GLM-4V's model fills images and videos into the same image-token mask")
    from PIL import Image

    image = Image.fromarray(H.random_video(1, 56, 56, seed=9)[0])
    text = [H.prompt(model_type, videos=1, images=1)]
    video = H.random_video(4, 56, 84, seed=4)
    inputs = build_video_inputs(parts, text, [video], images=[image])
    image_id = int(model.config.image_token_id)
    n_image = int((inputs["input_ids"] == image_id).sum())
    assert n_image > 0
    with lm_calls(model) as plain, torch.no_grad():
        model(**inputs)
    prepared = prepare(model, inputs, retention=0.25)
    assert "pixel_values" not in prepared and prepared["mm_encoder_outputs"].get("image") is not None
    with lm_calls(model) as compressed, torch.no_grad():
        model(**prepared)
    old = plain[0]["inputs_embeds"][0][inputs["input_ids"][0] == image_id]
    new = compressed[0]["inputs_embeds"][0][prepared["input_ids"][0] == image_id]
    assert torch.equal(old, new)
    # image positions unchanged too
    old_pos = plain[0]["position_ids"][-3:, 0][:, inputs["input_ids"][0] == image_id]
    new_pos = compressed[0]["position_ids"][1:, 0][:, prepared["input_ids"][0] == image_id]
    assert torch.equal(old_pos, new_pos)
    # and with compression off, the whole generation is unchanged
    assert torch.equal(_generate(model, prepare(model, inputs, enabled=False)), _generate(model, inputs))


class _SampledVideos:
    """Stands in for transformers' video processor (which needs torchvision): returns our
    pixels, grid and the given metadata, so that the real Qwen2.5-VL processor code
    derives ``second_per_grid_ts`` from them."""

    merge_size = 2
    temporal_patch_size = 2

    def __init__(self, data: Any, metadata: list[Any]) -> None:
        self.data, self.metadata = data, metadata

    def __call__(self, videos: Any, **kwargs: Any) -> dict[str, Any]:
        return {
            "pixel_values_videos": self.data["pixel_values_videos"],
            "video_grid_thw": self.data["video_grid_thw"],
            "video_metadata": self.metadata,
        }


@pytest.mark.parametrize("fps", [1.0, 4.0])
def test_qwen25_temporal_positions_follow_the_real_frame_rate(fps: float) -> None:
    """Frames decoded at ``fps`` (their timestamps say so) get the temporal positions the
    model's own processor computes for that rate, not those of the 2 fps default."""
    from transformers import Qwen2_5_VLProcessor
    from transformers.video_utils import VideoMetadata

    model = H.tiny_model("qwen2_5_vl")
    parts = H.tiny_parts("qwen2_5_vl", model)
    video = H.random_video(8, 56, 84, seed=2)
    times = [i / fps for i in range(8)]
    ours = build_video_inputs(parts, [H.prompt("qwen2_5_vl")], [video], timestamps=[times])

    processor = object.__new__(Qwen2_5_VLProcessor)  # the real _process_videos, our stand-in sampler
    metadata = VideoMetadata(total_num_frames=64, fps=8 * fps, frames_indices=list(range(0, 64, 8)))
    processor.video_processor = _SampledVideos(ours, [metadata])
    processor.video_token = "<|video_pad|>"
    theirs, _ = Qwen2_5_VLProcessor._process_videos(processor, [list(video)])
    assert metadata.sampled_fps == pytest.approx(fps)
    expected = torch.tensor(theirs["second_per_grid_ts"], dtype=torch.float32)
    torch.testing.assert_close(ours["second_per_grid_ts"], expected)

    family = get_family(model)
    got = family.original_positions(model, ours)
    want = family.original_positions(model, dict(ours, second_per_grid_ts=expected))
    assert torch.equal(got, want)
    default = family.original_positions(model, build_video_inputs(parts, [H.prompt("qwen2_5_vl")], [video]))
    assert not torch.equal(got[0], default[0])  # 2 fps would give other temporal positions
    # compressed, each video token keeps its representative's position at the real rate
    prepared = prepare(model, ours, retention=0.3)
    stats = prepared.stats[0]
    run = (ours["input_ids"][0] == family.video_token_id(model)).nonzero().squeeze(1)
    span = prepared["position_ids"][1:, 0, stats.start : stats.start + stats.tokens_after]
    assert torch.equal(span, want[:, 0, run[stats.result.representatives]])


@pytest.mark.parametrize("model_type", ["qwen3_vl", "glm4v", "glm46v"])
def test_segment_text_is_what_the_model_processor_writes(model_type: str) -> None:
    """Without torchvision our inputs write, per temporal step, the timestamp and markers
    that the model's own processor writes for frames taken at the same times (the
    processor's replace_video_token, fed the metadata we hand it when it is used)."""
    from transformers import Glm4vProcessor, Glm46VProcessor, Qwen3VLProcessor

    from llava_scissor.integrations.hf import inputs as I

    parts = H.tiny_parts(model_type)
    video = H.random_video(6, 56, 84, seed=3)
    times = [0.0, 0.4, 0.8, 1.2, 1.6, 2.0]  # 2.5 fps
    ours = build_video_inputs(parts, [H.prompt(model_type)], [video], timestamps=[times])
    grid = ours["video_grid_thw"]
    text = I._segmented_text(parts, grid, [times], [6])[0]

    cls = {"qwen3_vl": Qwen3VLProcessor, "glm4v": Glm4vProcessor, "glm46v": Glm46VProcessor}[model_type]
    processor = object.__new__(cls)
    processor.video_processor = type("V", (), {"merge_size": 2, "temporal_patch_size": 2})()
    processor.video_token = processor.image_token = (
        H.IMAGE_TOKEN[model_type] if model_type.startswith("glm") else "<|video_pad|>"
    )
    processor.vision_start_token, processor.vision_end_token = "<|vision_start|>", "<|vision_end|>"
    metadata = I._processor_metadata([times])["video_metadata"]
    theirs = processor.replace_video_token({"video_grid_thw": grid, "video_metadata": metadata}, 0)
    assert text == theirs
    ends = {"qwen3_vl": "<1.8 seconds><|vision_start|>", "glm4v": ">1", "glm46v": ">1.6 seconds"}[model_type]
    assert text.endswith(ends) or ends in text


@pytest.mark.parametrize("model_type", ["qwen3_vl", "glm4v"])
def test_an_emptied_frame_keeps_its_timestamp_and_markers(model_type: str) -> None:
    """The documented choice: a frame segment left with no token keeps its text (timestamp)
    and markers, so every text token of the prompt reaches the model unchanged."""
    model = H.tiny_model(model_type)
    parts = H.tiny_parts(model_type, model)
    inputs = _inputs(model_type, parts, [8])  # 4 temporal steps
    prepared = prepare(model, inputs, max_tokens=1)
    stats = prepared.stats[0]
    assert sorted(stats.segment_tokens) == [0, 0, 0, 1]
    family = get_family(model)
    old, new = family.video_token_mask(model, inputs)[0], family.video_token_mask(model, prepared)[0]
    old_text = inputs["input_ids"][0][(inputs["attention_mask"][0] == 1) & ~old]
    new_text = prepared["input_ids"][0][(prepared["attention_mask"][0] == 1) & ~new]
    assert torch.equal(old_text, new_text)
    # the kept token sits between the markers of its representative's step
    step = int(stats.result.representatives[0]) // stats.tokens_per_frame
    assert stats.segment_tokens[step] == 1
    _generate(model, prepared)


def test_the_command_line_session_passes_the_frame_rate(tmp_path: Any) -> None:
    """The loading / input path the command line uses (``session``) hands the decoder's
    timestamps on: frames taken at 3 fps give second_per_grid_ts = 2 / 3."""
    from llava_scissor.integrations.hf import session

    folder = H.write_tiny_model("qwen2_5_vl", tmp_path / "qwen25")
    loaded = session.load_model(str(folder), device="cpu", dtype="float32")
    video = H.random_video(4, 56, 84, seed=6)
    inputs = session.video_inputs(loaded, video, session.chat_prompt(loaded, "what happens"), [0.0, 1 / 3, 2 / 3, 1.0])
    torch.testing.assert_close(inputs["second_per_grid_ts"], torch.tensor([2 / 3]))  # one value per video
    plain = session.video_inputs(loaded, video, session.chat_prompt(loaded, "what happens"))
    torch.testing.assert_close(plain["second_per_grid_ts"], torch.tensor([1.0]))  # 2 fps without timestamps
