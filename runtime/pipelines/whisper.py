"""automatic-speech-recognition for Whisper bundles (encoder_model + decoder_model_merged), as
transformers 4.57's pipeline runs ``WhisperForConditionalGeneration``.

runtime/pipelines/speech_recognition.py hands every bundle whose generation section is of kind
"encoder-decoder" here. Per 30 s window: the log-mel features (runtime/audio/features.py), the
encoder once, then the merged decoder under the shared search (runtime/generation) from Whisper's
forced prompt — ``<|startoftranscript|>``, the language and task tokens of a multilingual model
(the language detected from the first step when not given), ``<|notimestamps|>`` unless
timestamps are asked for — with the generation config's suppressed tokens and, for timestamps,
Whisper's timestamp rules (whisper_decode.py). The pipeline's own defaults apply as in
transformers: ``num_beams=5`` unless the checkpoint sets it, the checkpoint's ``max_length``
(448) over the pipeline's ``max_new_tokens=256``.

Long audio: ``chunk_length_s`` (and ``stride_length_s``, default chunk / 6) cut it into
overlapping windows whose transcripts are joined as transformers joins them. Audio longer than
30 s without chunking would need Whisper's sequential long-form decoding, which is not done
here: it is an InputError that names ``chunk_length_s``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeformers.models.errors import BundleError, InputError
from edgeformers.runtime.audio.features import whisper_log_mel, whisper_settings
from edgeformers.runtime.audio.io import audio_inputs, load_audio
from edgeformers.runtime.generation.seq2seq import KIND, Seq2SeqGenerator
from edgeformers.runtime.pipelines.base import Pipeline, check_count, unbatch
from edgeformers.runtime.pipelines.fill_mask import clean_up_tokenization
from edgeformers.runtime.pipelines.text2text_settings import GLOBAL_DEFAULTS, call_settings
from edgeformers.runtime.pipelines.whisper_decode import TimestampRules, decode_asr, segment_tokens

#: AutomaticSpeechRecognitionPipeline._default_generation_config ("follows openai's whisper").
PIPELINE_DEFAULTS = {"max_new_tokens": 256, "num_beams": 5}
#: generate arguments a call may pass (by name or in ``generate_kwargs``) besides language/task.
GENERATE_ARGUMENTS = ("max_new_tokens", "max_length", "num_beams", "length_penalty", "early_stopping",
                      "no_repeat_ngram_size", "repetition_penalty")
TASKS = ("transcribe", "translate")


class WhisperPipeline(Pipeline):
    task = "automatic-speech-recognition"
    components = ("encoder_model", "decoder_model_merged")

    def prepare(self) -> None:
        section = self.bundle.manifest.generation
        where = str(self.bundle.path)
        if section.get("kind") != KIND:
            raise BundleError(f"{where}: the manifest has no encoder-decoder generation section")
        self.generator = Seq2SeqGenerator(self.models["encoder_model"], self.models["decoder_model_merged"], section,
                                          where)
        self.config = self.bundle.read_json("preprocessor_config.json", required=True)
        self.features = whisper_settings(self.config)
        generation = dict(section.get("defaults") or {})
        self.generation = generation
        no_timestamps = generation.get("no_timestamps_token_id")
        if not isinstance(no_timestamps, int):
            raise BundleError(f"{where}: the generation config names no no_timestamps_token_id; not a Whisper bundle")
        self.no_timestamps = no_timestamps
        self.start_id = int(section["decoder_start_token_id"])
        self.eos = int(section["eos_token_id"][0])
        self.multilingual = bool(generation.get("is_multilingual"))
        self.lang_to_id: dict[str, int] = dict(generation.get("lang_to_id") or {})
        self.task_to_id: dict[str, int] = dict(generation.get("task_to_id") or {})
        self.defaults = self._pipeline_defaults(generation)
        config = self.bundle.read_json("config.json")
        positions = config.get("max_source_positions") or 1500
        self.time_precision = float(self.features["chunk_length"]) / float(positions)
        tokenizer_config = self.bundle.read_json("tokenizer_config.json")
        self.clean_up = bool(tokenizer_config.get("clean_up_tokenization_spaces", False))
        self.special_ids = self._special_ids()

    def _pipeline_defaults(self, generation: dict[str, Any]) -> dict[str, Any]:
        """Pipeline defaults, then each checkpoint value that differs from GenerationConfig()'s
        where the pipeline kept the global default, then the checkpoint's max_length over the
        pipeline's max_new_tokens (transformers' Pipeline.__init__)."""
        values = {**GLOBAL_DEFAULTS, **PIPELINE_DEFAULTS}
        for key, value in generation.items():
            default = GLOBAL_DEFAULTS.get(key)
            if key in GLOBAL_DEFAULTS and values.get(key) == default and value != default:
                values[key] = value
        if values["max_new_tokens"] == PIPELINE_DEFAULTS["max_new_tokens"] and values["max_length"] not in (None, 20):
            values["max_new_tokens"] = None
        values.update(forced_bos_token_id=None, forced_eos_token_id=None, decoder_start_token_id=None)
        return values

    def _special_ids(self) -> set[int]:
        """``tokenizer.all_special_ids``: the ids of the tokens tokenizer.json marks special."""
        from edgeformers.runtime.bundle_files import BundleFolder

        raw = BundleFolder(self.bundle.path).read_json("tokenizer.json")
        return {int(t["id"]) for t in raw.get("added_tokens", []) if t.get("special")}

    @property
    def sampling_rate(self) -> int:
        return int(self.features["sampling_rate"])

    def __call__(
        self,
        inputs: Any,
        return_timestamps: bool | str | None = None,
        chunk_length_s: float = 0,
        stride_length_s: float | tuple[float, float] | list[float] | None = None,
        return_language: bool | None = None,
        language: str | None = None,
        task: str | None = None,
        max_new_tokens: int | None = None,
        num_beams: int | None = None,
        generate_kwargs: dict[str, Any] | None = None,
        batch_size: int | None = None,
    ) -> Any:
        """Like transformers: one input -> ``{"text": ...}`` (``"chunks"`` too with
        ``return_timestamps=True``: ``[{"timestamp": (start, end), "text"}]`` per segment), a
        list -> a list. ``language``/``task`` (or in ``generate_kwargs``) only for multilingual
        models; ``batch_size`` is accepted, windows run one at a time."""
        check_count("batch_size", batch_size)
        if return_timestamps not in (None, False, True):
            raise InputError(f"return_timestamps={return_timestamps!r}: Whisper bundles give segment timestamps "
                             "(True); 'word' timestamps need cross-attention outputs the export does not have")
        if return_language not in (None, False, True):
            raise InputError(f"return_language must be True or False, got {return_language!r}")
        if generate_kwargs is not None and not isinstance(generate_kwargs, dict):
            raise InputError(f"generate_kwargs must be a dict, got {type(generate_kwargs).__name__}")
        kwargs = dict(generate_kwargs or {})
        for name, value in (("language", language), ("task", task), ("max_new_tokens", max_new_tokens),
                            ("num_beams", num_beams)):
            if value is not None:
                kwargs[name] = value
        unknown = sorted(set(kwargs) - {"language", "task", *GENERATE_ARGUMENTS})
        if unknown:
            raise InputError(f"generate_kwargs {unknown} are not supported for Whisper; accepted: language, task, "
                             f"{', '.join(GENERATE_ARGUMENTS)}")
        timestamps = bool(return_timestamps)
        prompt_head = self._prompt_head(kwargs.pop("language", None), kwargs.pop("task", None))
        chunking = self._chunking(chunk_length_s, stride_length_s)
        items, single = audio_inputs(inputs)
        results = []
        for index, item in enumerate(items):
            where = "inputs" if single else f"inputs[{index}]"
            audio, extra = load_audio(item, self.sampling_rate, where)
            if extra.get("stride") is not None:
                raise InputError(f"{where}: a 'stride' entry is for CTC models; Whisper takes chunk_length_s")
            windows = self._windows(audio, chunking, where)
            outputs = []
            for window, stride in windows:
                tokens = self._transcribe(window, prompt_head, timestamps, kwargs)
                outputs.append({"tokens": tokens} if stride is None else {"tokens": tokens, "stride": stride})
            text, optional = decode_asr(
                outputs, self._decode, self.special_ids, lambda t: self.tokenizer.id_to_token(t) or "",
                self.no_timestamps + 1, self.tokenizer.token_to_id("<|startofprev|>"), self.start_id,
                timestamps, bool(return_language), self.time_precision)
            results.append({"text": text, **optional})
        return unbatch(results, single)

    def _decode(self, ids: list[int]) -> str:
        text = self.tokenizer.decode(ids, skip_special_tokens=False)
        return clean_up_tokenization(text) if self.clean_up else text

    def _prompt_head(self, language: Any, task: Any) -> tuple[list[int], bool]:
        """(the prompt's tokens after <|startoftranscript|>, whether to detect the language)."""
        if not self.multilingual:
            if language is not None or task is not None:
                raise InputError("Cannot specify `task` or `language` for an English-only model (this bundle's "
                                 "generation config has is_multilingual false)")
            forced = sorted((int(p), t) for p, t in self.generation.get("forced_decoder_ids") or [])
            head = [int(t) for p, t in forced if t is not None and t != self.no_timestamps]
            return head, False
        head: list[int] = []
        if language is None and task is None:  # the forced ids after the language slot (transcribe)
            forced = sorted((int(p), t) for p, t in self.generation.get("forced_decoder_ids") or [])
            return [int(t) for p, t in forced if p >= 2 and t is not None and t != self.no_timestamps], True
        if language is not None:
            head.append(self._language_id(language))
        if task is not None:
            if task not in TASKS or task not in self.task_to_id:
                raise InputError(f"task={task!r} is not supported; Whisper takes one of {', '.join(TASKS)}")
            head.append(int(self.task_to_id[task]))
        elif language is not None and "transcribe" in self.task_to_id:
            head.append(int(self.task_to_id["transcribe"]))
        return head, language is None

    def _language_id(self, language: Any) -> int:
        if not isinstance(language, str):
            raise InputError(f"language must be a string such as 'en' or 'english', got {language!r}")
        name = language.lower()
        codes = {v: k for k, v in _language_names().items()}
        token = name if name in self.lang_to_id else f"<|{codes.get(name, name)}|>"
        if token not in self.lang_to_id:
            accepted = ", ".join(sorted(t[2:-2] for t in self.lang_to_id))
            raise InputError(f"Unsupported language: {language!r}; this model accepts: {accepted}")
        return int(self.lang_to_id[token])

    def _chunking(self, chunk_length_s: Any, stride_length_s: Any) -> tuple[int, int, int] | None:
        """(chunk, left, right) in samples, as transformers' preprocess computes them."""
        if isinstance(chunk_length_s, bool) or not isinstance(chunk_length_s, (int, float)) or \
                not np.isfinite(chunk_length_s) or chunk_length_s < 0:
            raise InputError(f"chunk_length_s must be a number of seconds >= 0, got {chunk_length_s!r}")
        if not chunk_length_s:
            return None
        strides = stride_length_s if stride_length_s is not None else chunk_length_s / 6
        strides = [strides, strides] if isinstance(strides, (int, float)) and not isinstance(strides, bool) \
            else strides
        if not (isinstance(strides, (list, tuple)) and len(strides) == 2 and all(
                isinstance(s, (int, float)) and not isinstance(s, bool) and np.isfinite(s) and s >= 0
                for s in strides)):
            raise InputError(f"stride_length_s must be seconds >= 0 or a (left, right) pair, got {stride_length_s!r}")
        rate = self.sampling_rate
        chunk, left, right = (int(round(seconds * rate)) for seconds in (chunk_length_s, *strides))
        if chunk < left + right:
            raise InputError(f"chunk_length_s ({chunk_length_s}) must be at least the two strides together "
                             f"({strides[0]} + {strides[1]} s)")
        if chunk > self.features["n_samples"]:
            raise InputError(f"chunk_length_s ({chunk_length_s}) is longer than Whisper's "
                             f"{self.features['chunk_length']} s window")
        if chunk == left + right:
            raise InputError("chunk_length_s must be longer than the two strides together")
        return chunk, left, right

    def _windows(self, audio: np.ndarray, chunking: tuple[int, int, int] | None,
                 where: str) -> list[tuple[np.ndarray, tuple[float, float, float] | None]]:
        """(samples, stride in seconds or None) per window, as transformers' chunk_iter."""
        if chunking is None:
            if audio.shape[0] > self.features["n_samples"]:
                raise InputError(f"{where} is {audio.shape[0] / self.sampling_rate:.1f} s, longer than Whisper's "
                                 f"{self.features['chunk_length']} s window: pass chunk_length_s=30 to transcribe it "
                                 "in overlapping windows (sequential long-form decoding is not available)")
            return [(audio, None)]
        chunk, left, right = chunking
        rate = float(self.sampling_rate)
        windows = []
        total = audio.shape[0]
        for start in range(0, total, chunk - left - right):
            piece = audio[start:start + chunk]
            is_last = start + chunk >= total
            stride_left, stride_right = (0 if start == 0 else left), (0 if is_last else right)
            if piece.shape[0] > stride_left:
                windows.append((piece, (piece.shape[0] / rate, stride_left / rate, stride_right / rate)))
            if is_last:
                break
        return windows

    def _transcribe(self, audio: np.ndarray, prompt_head: tuple[list[int], bool], timestamps: bool,
                    kwargs: dict[str, Any]) -> list[int]:
        """The tokens Whisper's generate returns for one window (prompt excluded)."""
        features = whisper_log_mel(audio, self.config)[None]
        head, detect = prompt_head
        prompt = [self.start_id]
        if detect and self.lang_to_id:
            prompt.append(self._detect_language(features))
        prompt += head
        if not timestamps:
            prompt.append(self.no_timestamps)
        settings = self._settings(len(prompt), kwargs)
        if timestamps:
            settings.logits_processors = [TimestampRules(  # type: ignore[attr-defined]
                self.no_timestamps, self.eos, len(prompt), self.generation.get("max_initial_timestamp_index"))]
        ids = np.asarray([prompt], dtype=np.int64)
        sequences = self.generator.generate({"input_features": features}, settings, decoder_input_ids=ids)
        new = [int(t) for t in sequences[0, len(prompt):]]
        return segment_tokens(new, self.eos, settings.pad_id(), self.no_timestamps + 1)

    def _detect_language(self, features: np.ndarray) -> int:
        """transformers' ``detect_language``: the first step's most likely language token."""
        stepper = self.generator.stepper({"input_features": features})
        logits = stepper.step(np.asarray([[self.start_id]], dtype=np.int64))[0]
        ids = np.asarray(sorted(self.lang_to_id.values()), dtype=np.int64)
        return int(ids[np.argmax(logits[ids])])

    def _settings(self, prompt_length: int, kwargs: dict[str, Any]) -> Any:
        values = dict(self.defaults)
        given = {k: v for k, v in kwargs.items() if v is not None}
        if "max_length" in given and "max_new_tokens" not in given:
            values["max_new_tokens"] = None
        values.update(given)
        positions = self.generator.layout.max_positions
        new = values.get("max_new_tokens")
        if positions and isinstance(new, int) and not isinstance(new, bool) and new >= 1 and \
                new + prompt_length > positions:  # transformers' _set_max_new_tokens_and_length refuses it too
            raise InputError(f"max_new_tokens={new} with the {prompt_length}-token prompt exceeds Whisper's "
                             f"{positions} decoder positions; pass at most {positions - prompt_length}")
        return call_settings(values, {}, self.generator.vocab_size)


def _language_names() -> dict[str, str]:
    from edgeformers.runtime.pipelines.whisper_decode import LANGUAGE_NAMES

    return LANGUAGE_NAMES
