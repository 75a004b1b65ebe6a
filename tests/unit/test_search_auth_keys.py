"""API keys: the printed form, salted hashes, what a secret is worth in each state, scopes, durations, corpora."""

from __future__ import annotations

import datetime as dt

import pytest

from mmsearch.api_keys import KEY_LENGTH, ApiKey, KeyFormatError
from services.search.auth.keys import KeyRecord, StoredSecret, corpus_allowed, parse_duration, parse_scopes

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)


def _record(key: ApiKey, **fields: object) -> KeyRecord:
    base: dict[str, object] = {
        "key_id": key.key_id,
        "name": "t",
        "scopes": ("search",),
        "secrets": (StoredSecret.of(key.secret, NOW),),
        "created_at": NOW,
    }
    return KeyRecord.model_validate({**base, **fields}, by_name=True)


def test_a_generated_key_reads_back_and_has_the_documented_form() -> None:
    key = ApiKey.generate()
    text = str(key)
    assert text.startswith("mms_")
    assert len(text) == KEY_LENGTH == 4 + 16 + 1 + 64
    assert ApiKey.parse(text) == key
    assert ApiKey.parse(f"  {text}\n") == key  # a key pasted from a file keeps its newline
    assert key.secret not in repr(key)
    assert ApiKey.generate() != key


@pytest.mark.parametrize(
    "text",
    [
        "",
        "mms_",
        "mms_0123456789abcdef_" + "a" * 63,  # secret one short
        "mms_0123456789abcdef_" + "a" * 65,  # one long
        "mms_0123456789ABCDEF_" + "a" * 64,  # upper case is not our alphabet
        "mms_0123456789abcdeg_" + "a" * 64,  # not hex
        "xyz_0123456789abcdef_" + "a" * 64,  # other prefix
        "mms-0123456789abcdef-" + "a" * 64,
        "mms_0123456789abcdef_" + "a" * 64 + "x" * 5000,  # huge
        "mms_0123456789abcdef_" + "ä" * 64,
    ],
)
def test_anything_else_is_refused_without_being_repeated(text: str) -> None:
    with pytest.raises(KeyFormatError) as err:
        ApiKey.parse(text)
    assert "mms_<16 hex digits>_<64 hex digits>" in str(err.value)
    if len(text) > 8:
        assert text.strip() not in str(err.value)


def test_only_a_salted_hash_is_stored_and_it_checks_in_constant_time() -> None:
    key = ApiKey.generate()
    a, b = StoredSecret.of(key.secret, NOW), StoredSecret.of(key.secret, NOW)
    assert a.salt != b.salt
    assert a.hash != b.hash
    assert key.secret not in a.model_dump_json()
    assert a.matches(key.secret)
    assert b.matches(key.secret)
    assert not a.matches(ApiKey.generate().secret)


def test_what_a_secret_is_worth_in_each_state() -> None:
    key = ApiKey.generate()
    other = ApiKey.generate()
    record = _record(key)
    assert record.check(key.secret, NOW) == "ok"
    assert record.check(other.secret, NOW) == "invalid"
    assert _record(key, revoked_at=NOW).check(key.secret, NOW) == "revoked"
    # A wrong secret learns nothing about the key's state.
    assert _record(key, revoked_at=NOW).check(other.secret, NOW) == "invalid"
    expiring = _record(key, expires_at=NOW + dt.timedelta(seconds=1))
    assert expiring.check(key.secret, NOW) == "ok"
    assert expiring.check(key.secret, NOW + dt.timedelta(seconds=1)) == "expired"


def test_a_rotation_keeps_the_old_secret_for_its_grace_period_only() -> None:
    old, new = ApiKey.generate(), ApiKey.generate()
    until = NOW + dt.timedelta(hours=1)
    record = _record(
        old,
        secrets=(
            StoredSecret.of(old.secret, NOW).model_copy(update={"expires_at": until}),
            StoredSecret.of(new.secret, NOW),
        ),
    )
    assert record.check(old.secret, NOW) == "ok"
    assert record.check(new.secret, NOW) == "ok"
    assert record.check(old.secret, until) == "rotated"
    assert record.check(new.secret, until + dt.timedelta(days=400)) == "ok"


def test_admin_holds_every_scope_and_others_only_their_own() -> None:
    key = ApiKey.generate()
    assert _record(key, scopes=("admin",)).allows("metrics")
    assert _record(key, scopes=("search", "feedback")).allows("feedback")
    assert not _record(key, scopes=("search",)).allows("documents")


def test_scopes_and_durations_are_parsed_or_refused_by_name() -> None:
    assert parse_scopes("feedback, search") == ("search", "feedback")
    assert parse_scopes(["admin"]) == ("admin",)
    with pytest.raises(ValueError, match="unknown scope write: the scopes are search, feedback"):
        parse_scopes("search,write")
    with pytest.raises(ValueError, match="at least one scope"):
        parse_scopes(" , ")
    assert parse_duration("90d") == dt.timedelta(days=90)
    assert parse_duration("12h") == dt.timedelta(hours=12)
    assert parse_duration("30m") == dt.timedelta(minutes=30)
    assert parse_duration("2w") == dt.timedelta(weeks=2)
    for bad in ("0d", "-1d", "90", "d", "1.5h", "3 years"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(bad)


def test_corpus_patterns() -> None:
    assert corpus_allowed("*", "faq_qa")
    assert corpus_allowed("faq_*", "faq_qa")
    assert corpus_allowed("photos, faq_*", "photos")
    assert not corpus_allowed("faq_*", "photos")
    assert not corpus_allowed("", "faq_qa")
