from __future__ import annotations

from pathlib import Path

import pytest

from pytest_groundtruth.config.prompts import Message, PromptError, load_prompts

ROOT = Path(__file__).parents[2]


def test_the_four_original_prompts_keyed_by_stem() -> None:
    original = ("arithmetic", "code", "completion", "greeting")  # the workflow's four
    prompts = {p.name: p.text for p in load_prompts(ROOT / "prompts", list(original))}
    assert prompts == {
        "arithmetic": "What is 2+2? Answer:",
        "code": "def fibonacci(n):",
        "completion": "The capital of France is",
        "greeting": "Hello, my name is",
    }


def test_the_chat_prompts_are_conversations() -> None:
    chats = {p.name: p for p in load_prompts(ROOT / "prompts") if p.is_chat}
    assert list(chats) == ["capital", "colours"]
    assert chats["capital"].messages == (Message("user", "What is the capital of France?"),)
    assert [m.role for m in chats["colours"].messages] == ["system", "user"]
    assert chats["capital"].text == "user: What is the capital of France?"


def test_chat_prompt_file(tmp_path: Path) -> None:
    (tmp_path / "chat").mkdir()
    (tmp_path / "chat" / "hi.json").write_text(
        '[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]')
    (prompt,) = load_prompts(tmp_path)
    assert (prompt.name, prompt.is_chat, prompt.messages) == (
        "hi", True, (Message("system", "Be brief."), Message("user", "Hi")))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not valid JSON"),
        ("[]", "non-empty JSON list of messages"),
        ('[{"role": "user"}]', "exactly the keys 'role' and 'content'"),
        ('[{"role": "robot", "content": "x"}]', "role 'robot' is not one of"),
        ('[{"role": "user", "content": " "}]', "non-empty string"),
    ],
)
def test_bad_chat_prompts_are_named(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "chat").mkdir()
    (tmp_path / "chat" / "bad.json").write_text(content)
    with pytest.raises(PromptError, match=message) as info:
        load_prompts(tmp_path)
    assert "bad.json" in str(info.value)


def test_chat_and_plain_names_are_unique(tmp_path: Path) -> None:
    (tmp_path / "hi.txt").write_text("Hi")
    (tmp_path / "chat").mkdir()
    (tmp_path / "chat" / "hi.json").write_text('[{"role": "user", "content": "Hi"}]')
    with pytest.raises(PromptError, match="is taken by"):
        load_prompts(tmp_path)


def test_text_is_stripped_and_subdirectories_ignored(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("  Hello there \n\n")
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "long.txt").write_text("not a prompt")
    assert [(p.name, p.text) for p in load_prompts(tmp_path)] == [("a", "Hello there")]


def test_selection_and_unknown_names(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("A")
    (tmp_path / "b.txt").write_text("B")
    assert [p.name for p in load_prompts(tmp_path, ["b"])] == ["b"]
    with pytest.raises(PromptError, match=r"prompt\(s\) c not found .* \(have: a, b\)"):
        load_prompts(tmp_path, ["c"])


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.txt", b"  \n", "the prompt is empty"),
        ("latin1.txt", "caf\xe9".encode("latin-1"), "not valid UTF-8"),
        ("has space.txt", b"x", "may hold only letters"),
    ],
)
def test_bad_prompt_files_are_named(tmp_path: Path, name: str, content: bytes,
                                    message: str) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(PromptError, match=message) as info:
        load_prompts(tmp_path)
    assert name in str(info.value)


def test_missing_or_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match="does not exist"):
        load_prompts(tmp_path / "nope")
    with pytest.raises(PromptError, match=r"has no \*\.txt files"):
        load_prompts(tmp_path)
