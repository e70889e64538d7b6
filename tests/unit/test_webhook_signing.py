"""Unit tests for webhooks: Standard Webhooks signing, verification and the secret they use."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from config import Settings
from delivery import signing

# The published Standard Webhooks test vector: standard-webhooks/standard-webhooks,
# libraries/python/tests/test_webhooks.py::test_sign_function (the same values appear in the
# Svix libraries' tests). The installed package ships no tests, so the values are copied here.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(bytes(range(1, 33))).decode()
MSG_ID = "msg_2b7d1c0e9f4a"
BODY = json.dumps(
    {
        "type": "request.completed",
        "timestamp": "2026-11-22T10:01:00Z",
        "data": {"request_id": "6f1c0000-0000-4000-8000-000000000000", "status": "COMPLETED"},
    }
).encode()
NOW = 1_800_000_000


def independent_signature(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The signature computed straight from the spec's formula, without our module."""
    signed = webhook_id.encode() + b"." + str(timestamp).encode() + b"." + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def our_headers(secret: str = SECRET, body: bytes = BODY, now: int = NOW) -> dict[str, str]:
    return signing.signed_headers(secret, MSG_ID, body, now=now)


# --- signing: interoperability with the spec and the reference library ---------------------------


def test_sign_reproduces_the_published_test_vector() -> None:
    assert signing.sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE


def test_the_test_vector_matches_an_independent_hmac() -> None:
    # Guards the copied constants: the vector is what the spec's formula gives.
    key = base64.b64decode(VECTOR_SECRET.removeprefix("whsec_"))
    assert independent_signature(key, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE


def test_sign_matches_an_independent_hmac_for_our_own_secret() -> None:
    expected = independent_signature(bytes(range(32)), MSG_ID, NOW, BODY)
    assert signing.sign(SECRET, MSG_ID, NOW, BODY) == expected


def test_plain_secret_signs_with_its_utf8_bytes() -> None:
    expected = independent_signature("plain-secret-é".encode(), MSG_ID, NOW, BODY)
    assert signing.sign("plain-secret-é", MSG_ID, NOW, BODY) == expected


def test_signed_headers_carry_the_standard_webhooks_fields() -> None:
    headers = signing.signed_headers(SECRET, MSG_ID, BODY, now=NOW)
    assert headers == {
        "content-type": "application/json",
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(NOW),
        "webhook-signature": independent_signature(bytes(range(32)), MSG_ID, NOW, BODY),
    }


def test_signed_headers_default_to_the_current_time() -> None:
    before = int(time.time())
    headers = signing.signed_headers(SECRET, MSG_ID, BODY)
    after = int(time.time())
    assert before <= int(headers["webhook-timestamp"]) <= after


def test_signed_headers_keep_the_id_and_refresh_the_signature_per_attempt() -> None:
    first = signing.signed_headers(SECRET, MSG_ID, BODY, now=NOW)
    retry = signing.signed_headers(SECRET, MSG_ID, BODY, now=NOW + 5)
    assert first["webhook-id"] == retry["webhook-id"] == MSG_ID
    assert retry["webhook-timestamp"] == str(NOW + 5)
    assert first["webhook-signature"] != retry["webhook-signature"]


@pytest.mark.parametrize("secret", [SECRET, VECTOR_SECRET], ids=["our-secret", "vector-secret"])
def test_reference_library_verifies_our_signed_headers(secret: str) -> None:
    headers = signing.signed_headers(secret, MSG_ID, BODY)  # the reference checks against the clock
    assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)


def test_reference_library_verifies_the_bare_base64_form_of_the_secret() -> None:
    headers = signing.signed_headers(SECRET, MSG_ID, BODY)
    assert Webhook(SECRET.removeprefix("whsec_")).verify(BODY, headers) == json.loads(BODY)


def test_reference_library_rejects_our_headers_under_another_secret() -> None:
    headers = signing.signed_headers(SECRET, MSG_ID, BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(OTHER_SECRET).verify(BODY, headers)


def test_reference_library_rejects_our_headers_for_a_tampered_body() -> None:
    headers = signing.signed_headers(SECRET, MSG_ID, BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(BODY.replace(b"COMPLETED", b"FAILED"), headers)


def test_reference_library_verifies_a_generated_secret(tmp_path) -> None:
    secret = signing.load_or_create_secret(Settings.from_env({"INSTANCE_DIR": str(tmp_path)}))
    headers = signing.signed_headers(secret, MSG_ID, BODY)
    assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)


# --- verify ---------------------------------------------------------------------------------------


def test_verify_accepts_our_own_signature_and_returns_the_id() -> None:
    assert signing.verify(SECRET, our_headers(), BODY, now=NOW) == MSG_ID


def test_verify_accepts_the_published_test_vector() -> None:
    headers = {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": VECTOR_SIGNATURE,
    }
    assert signing.verify(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_TIMESTAMP) == VECTOR_ID


def test_verify_accepts_a_plain_secret() -> None:
    headers = our_headers(secret="plain-secret")
    assert signing.verify("plain-secret", headers, BODY, now=NOW) == MSG_ID


def test_verify_defaults_to_the_current_time() -> None:
    headers = signing.signed_headers(SECRET, MSG_ID, BODY)
    assert signing.verify(SECRET, headers, BODY) == MSG_ID


@pytest.mark.parametrize(
    "body",
    [
        BODY.replace(b"COMPLETED", b"FAILED"),
        BODY + b" ",
        BODY[:-1],
        b"",
    ],
    ids=["changed-value", "trailing-space", "truncated", "empty"],
)
def test_verify_rejects_a_tampered_body(body: bytes) -> None:
    with pytest.raises(signing.InvalidSignature, match="no signature matches"):
        signing.verify(SECRET, our_headers(), body, now=NOW)


@pytest.mark.parametrize("wrong", [OTHER_SECRET, "plain-secret", SECRET.removeprefix("whsec_")])
def test_verify_rejects_a_wrong_secret(wrong: str) -> None:
    with pytest.raises(signing.InvalidSignature, match="no signature matches"):
        signing.verify(wrong, our_headers(), BODY, now=NOW)


def test_verify_rejects_a_changed_webhook_id() -> None:
    headers = {**our_headers(), "webhook-id": "msg_other"}
    with pytest.raises(signing.InvalidSignature, match="no signature matches"):
        signing.verify(SECRET, headers, BODY, now=NOW)


def test_verify_rejects_a_timestamp_changed_under_the_signature() -> None:
    headers = {**our_headers(), "webhook-timestamp": str(NOW + 1)}
    with pytest.raises(signing.InvalidSignature, match="no signature matches"):
        signing.verify(SECRET, headers, BODY, now=NOW)


@pytest.mark.parametrize("offset", [-301, 301, -3600, 3600], ids=["old-301s", "future-301s", "old-1h", "future-1h"])
def test_verify_rejects_a_stale_timestamp_in_either_direction(offset: int) -> None:
    headers = our_headers(now=NOW + offset)  # correctly signed, but too far from "now"
    with pytest.raises(signing.InvalidSignature, match="tolerance"):
        signing.verify(SECRET, headers, BODY, now=NOW)


@pytest.mark.parametrize("offset", [-300, 300, 0], ids=["old-300s", "future-300s", "exact"])
def test_verify_accepts_a_timestamp_within_five_minutes(offset: int) -> None:
    headers = our_headers(now=NOW + offset)
    assert signing.verify(SECRET, headers, BODY, now=NOW) == MSG_ID


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_verify_rejects_a_missing_header(missing: str) -> None:
    headers = our_headers()
    del headers[missing]
    with pytest.raises(signing.InvalidSignature, match="missing"):
        signing.verify(SECRET, headers, BODY, now=NOW)


@pytest.mark.parametrize("empty", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_verify_rejects_an_empty_header(empty: str) -> None:
    headers = {**our_headers(), empty: ""}
    with pytest.raises(signing.InvalidSignature, match="missing"):
        signing.verify(SECRET, headers, BODY, now=NOW)


def test_verify_rejects_no_headers_at_all() -> None:
    with pytest.raises(signing.InvalidSignature, match="missing"):
        signing.verify(SECRET, {}, BODY, now=NOW)


@pytest.mark.parametrize("raw", ["abc", f"{NOW}.5", "1.8e9", "0x6b49d200", f"{NOW}s"])
def test_verify_rejects_a_non_integer_timestamp(raw: str) -> None:
    headers = {**our_headers(), "webhook-timestamp": raw}
    with pytest.raises(signing.InvalidSignature, match="not an integer"):
        signing.verify(SECRET, headers, BODY, now=NOW)


@pytest.mark.parametrize("position", ["first", "middle", "last"])
def test_verify_accepts_several_signatures_when_one_matches(position: str) -> None:
    good = our_headers()["webhook-signature"]
    other_secret = our_headers(secret=OTHER_SECRET)["webhook-signature"]
    others = [other_secret, "v2," + good.removeprefix("v1,"), "v1,bm9wZQ=="]
    signatures = {
        "first": [good, *others],
        "middle": [others[0], good, *others[1:]],
        "last": [*others, good],
    }[position]
    headers = {**our_headers(), "webhook-signature": " ".join(signatures)}
    assert signing.verify(SECRET, headers, BODY, now=NOW) == MSG_ID


def test_verify_accepts_the_reference_multi_signature_header() -> None:
    # The shape of the reference library's test_multi_sig_payload_is_valid, against the vector.
    bogus = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
    headers = {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": " ".join([bogus, "v2," + bogus[3:], VECTOR_SIGNATURE, bogus]),
    }
    assert signing.verify(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_TIMESTAMP) == VECTOR_ID


def test_verify_rejects_several_signatures_when_none_matches() -> None:
    wrong = our_headers(secret=OTHER_SECRET)["webhook-signature"]
    headers = {**our_headers(), "webhook-signature": f"{wrong} v1,bm9wZQ=="}
    with pytest.raises(signing.InvalidSignature, match="no signature matches"):
        signing.verify(SECRET, headers, BODY, now=NOW)


def test_verify_rejects_the_right_digest_under_another_version() -> None:
    good = our_headers()["webhook-signature"]
    headers = {**our_headers(), "webhook-signature": "v2," + good.removeprefix("v1,")}
    with pytest.raises(signing.InvalidSignature):
        signing.verify(SECRET, headers, BODY, now=NOW)


# --- secret_key -----------------------------------------------------------------------------------


def test_secret_key_decodes_base64_after_the_whsec_prefix() -> None:
    assert signing.secret_key(SECRET) == bytes(range(32))
    assert signing.secret_key(VECTOR_SECRET) == base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")


@pytest.mark.parametrize("plain", ["plain-secret", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "WHSEC_abcd", "ünïcode"])
def test_secret_key_uses_the_bytes_of_a_plain_secret(plain: str) -> None:
    # Without the (case-sensitive) prefix, even a base64-looking string is taken as is.
    assert signing.secret_key(plain) == plain.encode()


@pytest.mark.parametrize(
    "malformed", ["whsec_a", "whsec_abcde", "whsec_" + "A" * 45], ids=["1-char", "5-chars", "45-chars"]
)
def test_secret_key_fails_on_a_malformed_whsec_value(malformed: str) -> None:
    with pytest.raises(ValueError):
        signing.secret_key(malformed)


# --- load_or_create_secret ------------------------------------------------------------------------


def settings_for(tmp_path, **env: str) -> Settings:
    return Settings.from_env({"INSTANCE_DIR": str(tmp_path), **env})


def test_load_or_create_secret_creates_a_whsec_secret_file_with_mode_0600(tmp_path) -> None:
    settings = settings_for(tmp_path)
    secret = signing.load_or_create_secret(settings)

    path = tmp_path / "webhook_secret"
    assert path.read_text() == secret
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32


def test_load_or_create_secret_returns_the_same_secret_on_the_second_call(tmp_path) -> None:
    settings = settings_for(tmp_path)
    first = signing.load_or_create_secret(settings)
    second = signing.load_or_create_secret(settings)
    assert second == first
    assert signing.load_or_create_secret(settings_for(tmp_path)) == first  # a restart, too


def test_load_or_create_secret_makes_a_different_secret_per_instance(tmp_path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = signing.load_or_create_secret(settings_for(tmp_path / "a"))
    second = signing.load_or_create_secret(settings_for(tmp_path / "b"))
    assert first != second


def test_load_or_create_secret_reads_an_existing_file_stripped(tmp_path) -> None:
    (tmp_path / "webhook_secret").write_text(SECRET + "\n")
    assert signing.load_or_create_secret(settings_for(tmp_path)) == SECRET


def test_load_or_create_secret_gives_up_on_a_file_that_stays_empty(tmp_path, monkeypatch) -> None:
    (tmp_path / "webhook_secret").write_text("")
    monkeypatch.setattr(signing.time, "sleep", lambda _seconds: None)
    with pytest.raises(RuntimeError, match="empty"):
        signing.load_or_create_secret(settings_for(tmp_path))


@pytest.mark.parametrize("configured", [SECRET, "plain-secret"], ids=["whsec", "plain"])
def test_load_or_create_secret_returns_webhook_secret_when_set(tmp_path, configured: str) -> None:
    assert signing.load_or_create_secret(settings_for(tmp_path, WEBHOOK_SECRET=configured)) == configured
    assert not (tmp_path / "webhook_secret").exists()


def test_load_or_create_secret_prefers_webhook_secret_over_a_kept_file(tmp_path) -> None:
    (tmp_path / "webhook_secret").write_text(OTHER_SECRET)
    assert signing.load_or_create_secret(settings_for(tmp_path, WEBHOOK_SECRET=SECRET)) == SECRET


def test_load_or_create_secret_treats_an_empty_webhook_secret_as_unset(tmp_path) -> None:
    secret = signing.load_or_create_secret(settings_for(tmp_path, WEBHOOK_SECRET=""))
    assert secret.startswith("whsec_")
    assert (tmp_path / "webhook_secret").read_text() == secret


@pytest.mark.parametrize(
    "malformed", ["whsec_a", "whsec_abcde", "whsec_" + "A" * 45], ids=["1-char", "5-chars", "45-chars"]
)
def test_load_or_create_secret_fails_on_a_malformed_whsec_value(tmp_path, malformed: str) -> None:
    with pytest.raises(ValueError):
        signing.load_or_create_secret(settings_for(tmp_path, WEBHOOK_SECRET=malformed))


@pytest.mark.parametrize(
    "malformed", ["whsec_", "whsec_!!!!", "whsec_not*base6"], ids=["empty", "no-base64-chars", "stray-char"]
)
def test_load_or_create_secret_fails_on_whsec_values_with_non_base64_characters(tmp_path, malformed: str) -> None:
    with pytest.raises(ValueError):
        signing.load_or_create_secret(settings_for(tmp_path, WEBHOOK_SECRET=malformed))


# --- tenant_secret --------------------------------------------------------------------------------

OWNER_A = hashlib.sha256(b"tenant-a-key").hexdigest()
OWNER_B = hashlib.sha256(b"tenant-b-key").hexdigest()


def test_tenant_secret_is_stable_for_a_key() -> None:
    assert signing.tenant_secret(SECRET, OWNER_A) == signing.tenant_secret(SECRET, OWNER_A)


def test_tenant_secret_differs_per_key_and_from_the_service_secret() -> None:
    secrets_ = {SECRET, signing.tenant_secret(SECRET, OWNER_A), signing.tenant_secret(SECRET, OWNER_B)}
    assert len(secrets_) == 3


def test_tenant_secret_depends_on_the_service_secret() -> None:
    assert signing.tenant_secret(SECRET, OWNER_A) != signing.tenant_secret(OTHER_SECRET, OWNER_A)


def test_tenant_secret_is_whsec_and_32_bytes_derived_from_the_key_hash() -> None:
    secret = signing.tenant_secret(SECRET, OWNER_A)
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    expected = hmac.new(bytes(range(32)), b"tenant-webhook-secret:" + OWNER_A.encode(), hashlib.sha256).digest()
    assert signing.secret_key(secret) == expected


def test_tenant_secret_of_an_open_mode_request_is_the_service_secret() -> None:
    assert signing.tenant_secret(SECRET, None) == SECRET


def test_reference_library_verifies_a_tenant_signature_only_with_that_tenants_secret() -> None:
    secret_a, secret_b = signing.tenant_secret(SECRET, OWNER_A), signing.tenant_secret(SECRET, OWNER_B)
    headers = signing.signed_headers(secret_a, MSG_ID, BODY)
    assert Webhook(secret_a).verify(BODY, headers) == json.loads(BODY)
    for other in (secret_b, SECRET):
        with pytest.raises(WebhookVerificationError):
            Webhook(other).verify(BODY, headers)
