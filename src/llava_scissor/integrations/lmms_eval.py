"""lmms-eval model plugin: evaluate any supported video LLM with any compression method.

    lmms-eval --model llava_scissor \\
        --model_args pretrained=llava-hf/llava-onevision-qwen2-7b-ov-hf,method=scissor,retention=0.1 \\
        --tasks mvbench,videomme --batch_size 1

lmms-eval (>= 0.7) finds the plugin through the entry-point group ``lmms_eval.models``
(``llava_scissor = "llava_scissor.integrations.lmms_eval:manifests"``), so no fork of
lmms-eval is needed. This module imports lmms-eval only when lmms-eval asks for the model
class, so importing it (or llava-scissor) never requires lmms-eval.

``model_args`` (all optional except ``pretrained``):

* ``pretrained``: a Hugging Face model id or folder of a supported family
  (``llava_scissor.integrations.hf.supported_model_types()``).
* ``method``: a registered method (``llava_scissor.available_methods()``) or ``none``
  for the uncompressed model (the same code path, every token kept). Default ``scissor``.
* ``retention`` / ``max_tokens`` / ``tau`` / ``seed`` / any ``ScissorConfig`` field, and
  the method's own options (e.g. ``dominant_ratio`` for VisionZip, ``layer`` for FastV).
* ``max_frames_num`` (32): frames sampled uniformly from each video.
* ``keep_newline`` (True): keep LLaVA-OneVision's video newline token.
* ``device`` (``auto``), ``dtype`` (``auto``), ``max_new_tokens`` (default for tasks that
  set none: 128).

Every response's token counts are kept in ``model.compression_log`` (one dict per
request: tokens before / after compression).
"""

from __future__ import annotations

from typing import Any

__all__ = ["MODEL_NAME", "manifests", "build_model_class"]

MODEL_NAME = "llava_scissor"
_CLASS_NAME = "LlavaScissor"
_CLASS: Any = None


def manifests() -> list[Any]:
    """Entry-point payload for lmms-eval's ``lmms_eval.models`` group."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [
        ModelManifest(
            model_id=MODEL_NAME,
            simple_class_path=f"{__name__}.{_CLASS_NAME}",
            aliases=("llava-scissor",),
        )
    ]


def __getattr__(name: str) -> Any:
    if name == _CLASS_NAME:
        return build_model_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _config_fields() -> set[str]:
    import dataclasses

    from ..core.config import ScissorConfig

    return {f.name for f in dataclasses.fields(ScissorConfig)}


def build_model_class() -> type:
    """The ``lmms`` subclass (built once, on first use, because it needs lmms-eval)."""
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    try:
        from lmms_eval.api.model import lmms
        from lmms_eval.api.registry import register_model
    except ImportError as exc:
        from .._errors import ScissorError

        raise ScissorError(f"the lmms-eval plugin needs lmms-eval (pip install lmms-eval): {exc}") from None

    import torch

    from .._errors import ScissorError

    class LlavaScissor(lmms):  # type: ignore[misc, valid-type]
        """A transformers video LLM whose video tokens go through a llava-scissor method."""

        is_simple = True

        def __init__(
            self,
            pretrained: str,
            method: str = "scissor",
            max_frames_num: int = 32,
            device: str = "auto",
            dtype: str = "auto",
            batch_size: int | str = 1,
            max_new_tokens: int = 128,
            keep_newline: bool = True,
            **compression: Any,
        ) -> None:
            super().__init__()
            from .hf.session import load_model
            from ..methods import get_method
            from .hf import apply

            if int(batch_size) != 1:
                raise ScissorError(f"the llava_scissor lmms-eval model runs batch_size=1, got {batch_size}")
            self.method = str(method).strip().lower()
            self.max_frames_num = int(max_frames_num)
            self.max_new_tokens = int(max_new_tokens)
            self.compression = dict(compression)
            self.loaded = load_model(str(pretrained), device=device, dtype=dtype)
            self.model = self.loaded.model
            self.tokenizer = getattr(self.loaded.processor, "tokenizer", None)
            if self.tokenizer is None:
                raise ScissorError(f"{pretrained}: the processor has no tokenizer")
            self.compression_log: list[dict[str, Any]] = []
            if self.method == "none":
                self.handle = apply(self.model, enabled=False, keep_newline=bool(keep_newline))
            else:
                get_method(self.method)  # unknown names fail here, listing the known ones
                if self.method == "scissor":
                    unknown = sorted(set(self.compression) - _config_fields())
                    if unknown:
                        raise ScissorError(f"unknown model_args for method 'scissor': {unknown}")
                self.handle = apply(
                    self.model, method=self.method, keep_newline=bool(keep_newline), **self.compression
                )

        # -- lmms-eval API ---------------------------------------------------------

        def generate_until(self, requests: list[Any]) -> list[str]:
            outputs = []
            for request in requests:
                context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
                inputs, _ = self._inputs(context, self._videos(doc_to_visual, doc_id, task, split))
                gen = dict(gen_kwargs or {})
                until = gen.pop("until", None)
                until = [until] if isinstance(until, str) else list(until or [])
                max_new = int(gen.pop("max_new_tokens", self.max_new_tokens))
                temperature = float(gen.pop("temperature", 0) or 0)
                kwargs: dict[str, Any] = {"max_new_tokens": max_new, "pad_token_id": self._pad_id()}
                if temperature > 0:
                    kwargs.update(do_sample=True, temperature=temperature)
                    if gen.get("top_p") is not None:
                        kwargs["top_p"] = float(gen["top_p"])
                else:
                    kwargs["do_sample"] = False
                with torch.no_grad():
                    out = self.model.generate(**inputs, **kwargs)
                prompt_length = self._prompt_length(inputs)
                text = self.tokenizer.decode(out[0, prompt_length:], skip_special_tokens=True)
                for stop in until:
                    if stop:
                        text = text.split(stop)[0]
                self._log(doc_id, task)
                outputs.append(text.strip())
                self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
            return outputs

        def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
            results = []
            for request in requests:
                context, doc_to_target, doc_to_visual, doc_id, task, split = request.args
                doc = self.task_dict[task][split][doc_id]
                continuation = doc_to_target(doc) if callable(doc_to_target) else str(doc_to_target)
                if isinstance(continuation, list):
                    continuation = continuation[0]
                inputs, prompt = self._inputs(context, self._videos(doc_to_visual, doc_id, task, split))
                cont_ids = self.tokenizer(continuation, add_special_tokens=False, return_tensors="pt")["input_ids"]
                cont_ids = cont_ids.to(inputs["input_ids"].device)
                n = int(cont_ids.shape[1])
                inputs["input_ids"] = torch.cat([inputs["input_ids"], cont_ids], dim=1)
                if inputs.get("attention_mask") is not None:
                    ones = torch.ones_like(cont_ids, dtype=inputs["attention_mask"].dtype)
                    inputs["attention_mask"] = torch.cat([inputs["attention_mask"], ones], dim=1)
                if inputs.get("mm_token_type_ids") is not None:
                    zeros = torch.zeros_like(cont_ids, dtype=inputs["mm_token_type_ids"].dtype)
                    inputs["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], zeros], dim=1)
                with torch.no_grad():
                    logits = self.model(**inputs).logits  # [1, L', vocab]
                pred = logits[0, -n - 1 : -1].float().log_softmax(-1)  # [n, vocab]
                target = cont_ids[0]
                logprob = float(pred.gather(1, target[:, None]).sum())
                greedy = bool((pred.argmax(-1) == target).all())
                self._log(doc_id, task)
                results.append((logprob, greedy))
            return results

        def generate_until_multi_round(self, requests: list[Any]) -> list[str]:
            raise NotImplementedError("llava_scissor does not implement multi-round generation")

        # -- helpers ---------------------------------------------------------------

        def _videos(self, doc_to_visual: Any, doc_id: int, task: str, split: str) -> list[Any]:
            from ..video import read_video

            visuals = doc_to_visual(self.task_dict[task][split][doc_id]) if doc_to_visual else []
            flat: list[Any] = []
            for v in visuals or []:
                flat.extend(v if isinstance(v, (list, tuple)) else [v])
            videos = []
            for v in flat:
                if not isinstance(v, str):
                    raise ScissorError(
                        f"llava_scissor evaluates video tasks (video paths); task {task!r} gave {type(v).__name__}"
                    )
                videos.append(read_video(v, self.max_frames_num).frames)
            return videos

        def _inputs(self, context: str, videos: list[Any]) -> tuple[dict[str, Any], str]:
            from .hf import build_video_inputs

            content: list[dict[str, Any]] = [{"type": "video"} for _ in videos]
            content.append({"type": "text", "text": context})
            messages = [{"role": "user", "content": content}]
            template = self.loaded.chat_template
            if template is not None:
                prompt = self.tokenizer.apply_chat_template(
                    messages, chat_template=template, tokenize=False, add_generation_prompt=True
                )
            else:
                token = getattr(self.loaded.processor, "video_token", None) or (
                    "<|video_pad|>" if self.loaded.model_type in ("qwen2_vl", "qwen2_5_vl") else "<video>"
                )
                marks = "".join(token for _ in videos)
                prompt = f"<|im_start|>user\n{marks}\n{context}<|im_end|>\n<|im_start|>assistant\n"
            if videos:
                batch = dict(build_video_inputs(self.loaded.processor, prompt, videos))
            else:
                batch = dict(self.tokenizer(prompt, return_tensors="pt"))
            out: dict[str, Any] = {}
            for key, value in batch.items():
                if isinstance(value, torch.Tensor):
                    value = value.to(self.loaded.device)
                    if value.is_floating_point():
                        value = value.to(self.model.dtype)
                elif isinstance(value, list) and value and all(isinstance(v, torch.Tensor) for v in value):
                    value = [v.to(self.loaded.device, self.model.dtype if v.is_floating_point() else v.dtype)
                             for v in value]
                out[key] = value
            return out, prompt

        def _prompt_length(self, inputs: dict[str, Any]) -> int:
            last = self.handle.last
            if last is not None and inputs.get("pixel_values_videos") is not None:
                return int(last["input_ids"].shape[1])
            return int(inputs["input_ids"].shape[1])

        def _pad_id(self) -> int:
            pad = getattr(self.tokenizer, "pad_token_id", None)
            if pad is None:
                pad = getattr(self.tokenizer, "eos_token_id", 0)
            return int(pad or 0)

        def _log(self, doc_id: int, task: str) -> None:
            stats = self.handle.stats
            self.compression_log.append(
                {
                    "task": task,
                    "doc_id": doc_id,
                    "method": self.method,
                    "tokens_before": sum(s.tokens_before for s in stats),
                    "tokens_after": sum(s.tokens_after for s in stats),
                }
            )

    LlavaScissor.__module__ = __name__
    LlavaScissor.__qualname__ = _CLASS_NAME
    register_model(MODEL_NAME)(LlavaScissor)
    _CLASS = LlavaScissor
    return LlavaScissor
