"""Hypothesis strategies shared by the parser fuzz tests: JSON-shaped documents built
from a parser's own keys and plausible values, mixed with arbitrary ones."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st


def json_documents(keys: Sequence[str], plausible: Sequence[Any]) -> st.SearchStrategy[Any]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**70), max_value=2**70)
        | st.floats()
        | st.text(max_size=20)
        | st.sampled_from(list(plausible))
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(st.sampled_from(list(keys)) | st.text(max_size=8), inner, max_size=6)
        ),
        max_leaves=30,
    )
