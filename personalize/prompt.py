"""The training prompt around the new token, for a backbone's `encode_prompt` and `reset_token`:
"a photo of a [V] dog" -> the word ids before [V] and after it (the category word first), and the
category's first token, whatever the tokenizer."""

from __future__ import annotations

from typing import Callable

from ..errors import SteerError
from .stages import CONCEPT_PLACEHOLDER

# text -> its word ids, without start/end tokens
WordIds = Callable[[str], list[int]]


def split_at_placeholder(prompt: str, word_ids: WordIds) -> tuple[list[int], list[int]]:
    """(ids before [V], ids after [V]) of a prompt holding exactly one CONCEPT_PLACEHOLDER."""
    if prompt.count(CONCEPT_PLACEHOLDER) != 1:
        raise ValueError(f"the prompt needs exactly one {CONCEPT_PLACEHOLDER}: {prompt!r}")
    before, after = (part.strip() for part in prompt.split(CONCEPT_PLACEHOLDER))
    before_ids = word_ids(before) if before else []
    after_ids = word_ids(after) if after else []
    if not after_ids:
        raise SteerError("the training prompt must continue after the new token with the category word")
    return before_ids, after_ids


def split_at_placeholders(prompt: str, word_ids: WordIds) -> list[list[int]]:
    """The word ids of the pieces around every CONCEPT_PLACEHOLDER (one more piece than placeholders),
    for sampling prompts such as "a [V] dog and a [V] dog"; each [V] must be followed by a word."""
    pieces = [part.strip() for part in prompt.split(CONCEPT_PLACEHOLDER)]
    ids = [word_ids(piece) if piece else [] for piece in pieces]
    if any(not after for after in ids[1:]):
        raise SteerError(f"every {CONCEPT_PLACEHOLDER} must be followed by the category word: {prompt!r}")
    return ids


def check_prompt_length(length: int, max_length: int) -> None:
    """The whole token sequence (start and end tokens included) must fit the text encoder."""
    if length > max_length:
        raise SteerError(f"the training prompt is {length} tokens long; the text encoder takes {max_length}. Use a shorter category")


def category_token_id(category: str, word_ids: WordIds) -> int:
    """The id of the category's first token, which the new token's embedding starts from."""
    ids = word_ids(category)
    if not ids:
        raise SteerError(f"the category {category!r} has no tokens; name the subject's category with a word such as 'dog'")
    return ids[0]
