"""Token verification and its cache (the service verifies a courier's token each second)."""

from __future__ import annotations

import time

import pytest

from api.auth import AuthError, TokenCache, check_secret, create_token
from tests.api.conftest import SECRET


def test_a_cached_token_still_expires() -> None:
    cache = TokenCache(SECRET)
    tok = create_token(SECRET, "courier", "c1", ttl_s=60)
    p = cache.verify(tok)
    assert (p.role, p.subject) == ("courier", "c1")
    assert cache.verify(tok) is p  # the second use is served from the cache
    with pytest.raises(AuthError) as e:
        cache.verify(tok, now=time.time() + 61)
    assert e.value.reason == "token_expired"


def test_forged_and_foreign_tokens_are_never_cached_as_valid() -> None:
    cache = TokenCache(SECRET)
    tok = create_token(SECRET, "ops", "o1", ttl_s=60)
    forged = tok[:-2] + ("AA" if not tok.endswith("AA") else "BB")
    foreign = create_token("another-secret-0123456789abcdef-0123", "ops", "o1", ttl_s=60)
    for bad in (forged, foreign, forged):
        with pytest.raises(AuthError) as e:
            cache.verify(bad)
        assert e.value.reason == "invalid_token"


def test_the_cache_is_bounded() -> None:
    cache = TokenCache(SECRET, max_size=3)
    tokens = [create_token(SECRET, "customer", f"u{i}", ttl_s=60) for i in range(10)]
    for t in tokens:
        cache.verify(t)
    assert len(cache._seen) == 3
    assert cache.verify(tokens[0]).subject == "u0"  # evicted ones are verified again


@pytest.mark.parametrize("blank", [" " * 40, "\t" * 32, " \n\t\r" * 10, "\u3000" * 32])
def test_a_blank_secret_is_refused_like_a_short_one(blank: str) -> None:
    with pytest.raises(AuthError) as e:
        check_secret(blank)
    assert e.value.reason == "weak_secret" and "O2O_SECRET" in str(e.value)
    with pytest.raises(AuthError):
        create_token(blank, "ops", "o1")


def test_a_padded_secret_is_still_accepted() -> None:
    assert check_secret(f"  {SECRET}  ") == f"  {SECRET}  "
