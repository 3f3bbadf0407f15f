"""The fault-injection harness: each fault changes what it says, and only that."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pytest_groundtruth.core.failures import EngineFailure
from pytest_groundtruth.ggufio.reader import read_metadata
from pytest_groundtruth.lab.calibrate import Measured, derive
from pytest_groundtruth.lab.file_faults import FAULTS, FaultNotApplicable, broken_artifact, inject
from pytest_groundtruth.models.sources import ResolvedModel
from pytest_groundtruth.runtimes.base import Artifact
from pytest_groundtruth.runtimes.llamacpp import LlamaCppRunner, LlamaCppRuntime
from pytest_groundtruth.store.artifacts import ArtifactCache, prepare

pytestmark = pytest.mark.requires_llamacpp


@pytest.fixture(scope="module")
def q8(tiny: Callable[[str], ResolvedModel], gt_cache: Path) -> Path:
    return prepare(LlamaCppRuntime(), tiny("llama"), "int8", ArtifactCache(gt_cache)).path


def tensors(path: Path) -> dict[str, bytes]:
    import gguf

    return {t.name: bytes(np.asarray(t.data).tobytes()) for t in gguf.GGUFReader(path).tensors}


@pytest.fixture(scope="module")
def original(q8: Path) -> tuple[dict[str, bytes], dict[str, object]]:
    return tensors(q8), read_metadata(q8)


def blocks(*names: str) -> set[str]:
    return {f"blk.{b}.{n}.weight" for b in (0, 1) for n in names}


# fault -> (the tensors it changes, the metadata keys it changes) on the two-block tiny-llama
EXPECTED: dict[str, tuple[set[str], set[str]]] = {
    "embedding_rows_shuffled": ({"token_embd.weight"}, set()),
    "qk_permutation_skipped": (blocks("attn_q", "attn_k"), set()),
    "rope_theta_wrong": (set(), {"llama.rope.freq_base"}),
    "norm_weight_replaced": ({"blk.1.attn_norm.weight"}, set()),
    "layer_dropped": (set(), {"llama.block_count"}),  # and blk.1.* removed
    "layer_duplicated": (set(), set()),  # blk.1.* hold blk.0.*'s bytes
    "scale_off": ({"blk.1.ffn_down.weight"}, set()),
    "eos_id_wrong": (set(), {"tokenizer.ggml.eos_token_id"}),
    "tokenizer_pre_wrong": (set(), {"tokenizer.ggml.pre"}),
    "bos_added": (set(), {"tokenizer.ggml.add_bos_token"}),
    "merges_sorted": (set(), {"tokenizer.ggml.merges"}),
    "vocab_shifted": (set(), {"tokenizer.ggml.tokens"}),
    "rope_scaling_added": (set(), {"llama.rope.scaling.type", "llama.rope.scaling.factor"}),
    "ffn_gate_up_swapped": (blocks("ffn_gate", "ffn_up"), set()),
    "attn_output_transposed": (blocks("attn_output"), set()),
    "q_heads_reversed": (blocks("attn_q"), set()),
    "layers_swapped": (set(), set()),  # blk.0.* <-> blk.1.*
    "tensor_zeroed": ({"blk.1.ffn_up.weight"}, set()),
    "norms_swapped": (blocks("attn_norm", "ffn_norm"), set()),
}
VALUES = {
    "rope_theta_wrong": ("llama.rope.freq_base", 1000.0),
    "eos_id_wrong": ("tokenizer.ggml.eos_token_id", 1),
    "tokenizer_pre_wrong": ("tokenizer.ggml.pre", "default"),
    "layer_dropped": ("llama.block_count", 1),
    "bos_added": ("tokenizer.ggml.add_bos_token", True),
    "rope_scaling_added": ("llama.rope.scaling.factor", 4.0),
}


def test_every_fault_is_listed_with_what_it_changes() -> None:
    assert set(FAULTS) == {*EXPECTED, "kv_heads_wrong"}
    assert len(FAULTS) >= 20


@pytest.mark.slow
@pytest.mark.parametrize("fault", sorted(EXPECTED))
def test_each_fault_changes_what_it_names(
    fault: str, q8: Path, original: tuple[dict[str, bytes], dict[str, object]], tmp_path: Path
) -> None:
    out = tmp_path / f"{fault}.gguf"
    change = inject(fault, q8, out)
    assert change
    before, meta_before = original
    after = tensors(out)
    meta_after = read_metadata(out)
    changed_tensors = {n for n in before if n in after and before[n] != after[n]}
    changed_keys = {k for k in {*meta_before, *meta_after} if not k.startswith("GGUF.")
                    and meta_before.get(k) != meta_after.get(k)}
    expected_tensors, expected_keys = EXPECTED[fault]
    assert changed_keys == expected_keys
    if fault in VALUES:
        key, value = VALUES[fault]
        assert meta_after[key] == value
    if fault == "layer_dropped":
        assert set(before) - set(after) == {n for n in before if n.startswith("blk.1.")}
    elif fault == "layer_duplicated":
        assert changed_tensors
        assert all(n.startswith("blk.1.") for n in changed_tensors)
        assert all(after[n] == before[n.replace("blk.1.", "blk.0.")] for n in changed_tensors)
    elif fault == "layers_swapped":
        assert changed_tensors == {n for n in before if n.startswith("blk.")}
        assert all(after[n] == before[n.replace("blk.0.", "blk.1.")] for n in after
                   if n.startswith("blk.0."))
    else:
        assert changed_tensors == expected_tensors


@pytest.mark.slow  # gguf's reader takes seconds on the 49152-token vocabulary, 5 reads
def test_tokenizer_faults_rewrite_the_vocabulary(q8: Path, tmp_path: Path) -> None:
    meta = read_metadata(q8)
    inject("merges_sorted", q8, tmp_path / "m.gguf")
    merges = read_metadata(tmp_path / "m.gguf")["tokenizer.ggml.merges"]
    assert merges == sorted(meta["tokenizer.ggml.merges"]) != meta["tokenizer.ggml.merges"]
    inject("vocab_shifted", q8, tmp_path / "v.gguf")
    tokens = read_metadata(tmp_path / "v.gguf")["tokenizer.ggml.tokens"]
    first = meta["tokenizer.ggml.token_type"].index(1)
    assert tokens[:first] == meta["tokenizer.ggml.tokens"][:first]
    assert tokens[first:-1] == meta["tokenizer.ggml.tokens"][first + 1:]


@pytest.mark.slow
def test_kv_heads_wrong_needs_grouped_query_attention(
    tiny: Callable[[str], ResolvedModel], gt_cache: Path, q8: Path, tmp_path: Path
) -> None:
    with pytest.raises(FaultNotApplicable, match="no GQA"):
        inject("kv_heads_wrong", q8, tmp_path / "x.gguf")
    qwen = prepare(LlamaCppRuntime(), tiny("qwen2"), "int8", ArtifactCache(gt_cache)).path
    assert "head_count_kv: 2 -> 4" in inject("kv_heads_wrong", qwen, tmp_path / "y.gguf")
    with pytest.raises(EngineFailure, match="could not load"):
        LlamaCppRunner(Artifact("llamacpp", "tiny-qwen2", "int8", tmp_path / "y.gguf", "k", "r"))


def small_gguf(path: Path, kv_heads: int) -> Path:
    """A two-block llama GGUF with a five-token BPE vocabulary (merges out of order, as a
    real tokenizer ranks them) and 4 query heads: the tokenizer and head-count faults
    read and write it in milliseconds, where the tiny models' 49152-token vocabulary
    takes gguf's reader seconds."""
    import gguf

    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(2)
    writer.add_head_count(4)
    writer.add_head_count_kv(kv_heads)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(["<s>", "</s>", "a", "b", "ab"])
    writer.add_token_types([3, 3, 1, 1, 1])
    writer.add_token_merges(["b a", "a b"])
    writer.add_tensor("token_embd.weight", np.arange(40, dtype=np.float32).reshape(5, 8))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_tokenizer_and_head_faults_on_a_small_file(tmp_path: Path) -> None:
    """The fast twin of the two tests above: the same faults on a small real GGUF."""
    source = small_gguf(tmp_path / "gqa.gguf", kv_heads=2)
    meta = read_metadata(source)
    assert "2 merges written in alphabetical order" in inject("merges_sorted", source,
                                                              tmp_path / "m.gguf")
    merges = read_metadata(tmp_path / "m.gguf")["tokenizer.ggml.merges"]
    assert merges == sorted(meta["tokenizer.ggml.merges"]) == ["a b", "b a"]
    assert "ids 2..4 shifted down by one id" in inject("vocab_shifted", source,
                                                        tmp_path / "v.gguf")
    assert read_metadata(tmp_path / "v.gguf")["tokenizer.ggml.tokens"] == [
        "<s>", "</s>", "b", "ab", "a"]
    assert inject("kv_heads_wrong", source, tmp_path / "k.gguf") == \
        "llama.attention.head_count_kv: 2 -> 4"
    after = read_metadata(tmp_path / "k.gguf")
    assert after["llama.attention.head_count_kv"] == 4
    assert {k: v for k, v in after.items() if k != "llama.attention.head_count_kv"} == \
        {k: v for k, v in meta.items() if k != "llama.attention.head_count_kv"}
    no_gqa = small_gguf(tmp_path / "mha.gguf", kv_heads=4)
    with pytest.raises(FaultNotApplicable, match="no GQA"):
        inject("kv_heads_wrong", no_gqa, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


@pytest.mark.slow
def test_scale_off_is_a_whole_tensor_scale(q8: Path, tmp_path: Path) -> None:
    import gguf
    from gguf.quants import dequantize

    out = tmp_path / "scaled.gguf"
    inject("scale_off", q8, out)

    def ffn(path: Path) -> np.ndarray:
        t = next(t for t in gguf.GGUFReader(path).tensors if t.name == "blk.1.ffn_down.weight")
        return np.asarray(dequantize(t.data, t.tensor_type))

    ratio = np.linalg.norm(ffn(out)) / np.linalg.norm(ffn(q8))
    assert ratio == pytest.approx(1.02, abs=2e-3)


@pytest.mark.slow
def test_broken_files_still_load_and_are_cached(q8: Path, tmp_path: Path) -> None:
    path, change = broken_artifact(tmp_path, q8, "k" * 24, "rope_theta_wrong")
    again, _ = broken_artifact(tmp_path, q8, "k" * 24, "rope_theta_wrong")
    assert path == again
    assert "freq_base" in change
    with LlamaCppRunner(Artifact("llamacpp", "tiny-llama", "int8", path, "k", "r")) as runner:
        assert len(runner.generate("Hello", 4).tokens) == 4


@pytest.mark.slow
def test_faults_that_do_not_apply_say_why(tiny: Callable[[str], ResolvedModel],
                                          gt_cache: Path, tmp_path: Path) -> None:
    gpt2 = prepare(LlamaCppRuntime(), tiny("gpt2"), "int8", ArtifactCache(gt_cache)).path
    with pytest.raises(FaultNotApplicable, match="gpt2 has no llama q/k permutation"):
        inject("qk_permutation_skipped", gpt2, tmp_path / "x.gguf")
    with pytest.raises(FaultNotApplicable, match=r"no rope\.freq_base"):
        inject("rope_theta_wrong", gpt2, tmp_path / "y.gguf")
    assert not list(tmp_path.iterdir())


def test_calibration_rule() -> None:
    rows = [Measured("m", "a", "int8", 0.98, 0.003, 100, 1.02, kl_se=0.0005),
            Measured("m", "b", "int8", 0.99, 0.001, 100, 1.01, kl_se=0.001)]
    bounds = derive(rows, "int8")
    # the loosest of each conversion's KL + 3 se: max(0.003 + 0.0015, 0.001 + 0.003)
    # = 0.0045 (the published 0.0014 is below both); 0.977 (published) - 3 * 0.0150 = 0.932;
    # ppl ratio 1 + 3 x 0.02
    assert bounds == {"max_kl": 0.0045, "min_top1": 0.93, "max_ratio": 1.06}
    # without the published figures (random-weight models): the measured ones alone
    assert derive(rows, "int8", published_figures=False)["min_top1"] == 0.93  # 0.98 - 0.042
    perfect = derive([Measured("m", "a", "float32", 1.0, 0.0, 95, 1.0)], "float32")
    # 1 - 1/95, KL floor, ratio floor
    assert perfect == {"max_kl": 0.0001, "min_top1": 0.98, "max_ratio": 1.002}
    with pytest.raises(ValueError, match="no correct conversion"):
        derive(rows, "int4")
