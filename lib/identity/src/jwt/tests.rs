//! Tests of token parsing and verification: a generated 2048-bit key for tokens shaped at will,
//! and a fixed 1024-bit key with a token in the exact shape of Abaco's gateway (padded standard
//! base64, `SHA256withRSA`, `exp` in milliseconds), produced once with openssl because AWS-LC
//! does not sign with keys under 2048 bits.

use std::sync::OnceLock;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{KeyPair, RsaKeyPair, RSA_PKCS1_SHA256};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::{json, Value};

use super::*;

/// 2026-11-23, around when these tests were written.
const NOW: i64 = 1_795_392_000;

/// SubjectPublicKeyInfo of the 1024-bit fixture key, base64 DER as in Abaco's `apim_public_key`.
const KEY_1024_SPKI_B64: &str = "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQCh7iFoahsFALCWzrvCJqenQDQ1Fjnc6z/dIEPANOIPgG+lguiArbVKNoOOfXE+eWdmbIOeHfJunbt5nOn+l1pf0lB7w1bh06pWshaPRbw0uqsFFLzf+bT82pklpo0HI0gcVg5CT1JSSbHaBYKxoD6rOuSrCFTrIcgukt64wQCzdwIDAQAB";

const KEY_1024_SPKI_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQCh7iFoahsFALCWzrvCJqenQDQ1
Fjnc6z/dIEPANOIPgG+lguiArbVKNoOOfXE+eWdmbIOeHfJunbt5nOn+l1pf0lB7
w1bh06pWshaPRbw0uqsFFLzf+bT82pklpo0HI0gcVg5CT1JSSbHaBYKxoD6rOuSr
CFTrIcgukt64wQCzdwIDAQAB
-----END PUBLIC KEY-----
";

const KEY_1024_PKCS1_PEM: &str = "-----BEGIN RSA PUBLIC KEY-----
MIGJAoGBAKHuIWhqGwUAsJbOu8Imp6dANDUWOdzrP90gQ8A04g+Ab6WC6ICttUo2
g459cT55Z2Zsg54d8m6du3mc6f6XWl/SUHvDVuHTqlayFo9FvDS6qwUUvN/5tPza
mSWmjQcjSBxWDkJPUlJJsdoFgrGgPqs65KsIVOshyC6S3rjBALN3AgMBAAE=
-----END RSA PUBLIC KEY-----
";

/// The fixture key's modulus, base64url, for JWKS tests.
const KEY_1024_N: &str = "oe4haGobBQCwls67wianp0A0NRY53Os_3SBDwDTiD4BvpYLogK21SjaDjn1xPnlnZmyDnh3ybp27eZzp_pdaX9JQe8NW4dOqVrIWj0W8NLqrBRS83_m0_NqZJaaNByNIHFYOQk9SUkmx2gWCsaA-qzrkqwhU6yHILpLeuMEAs3c";

/// A gateway-style token signed by the 1024-bit key: `exp` is 1496944476366 (milliseconds,
/// 2017-06-08T17:54:36Z), user `testuser@carbon.super`, roles everyone and admin.
const TOKEN_1024: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJTSEEyNTZ3aXRoUlNBIiwieDV0IjoiTm1KbU9HVXhNelkwTkRJMk5qRmhOekUwTWpFNFpHRTFOalU1T0dVeFl6SmxOV1pqTVRFNFl3PT0ifQ==.eyJpc3MiOiJ3c28yLm9yZy9wcm9kdWN0cy9hbSIsImV4cCI6MTQ5Njk0NDQ3NjM2NiwiaHR0cDovL3dzbzIub3JnL2NsYWltcy9zdWJzY3JpYmVyIjoidGVzdHVzZXIiLCJodHRwOi8vd3NvMi5vcmcvY2xhaW1zL2FwcGxpY2F0aW9uaWQiOiI1IiwiaHR0cDovL3dzbzIub3JnL2NsYWltcy9hcHBsaWNhdGlvbm5hbWUiOiJEZWZhdWx0QXBwbGljYXRpb24iLCJodHRwOi8vd3NvMi5vcmcvY2xhaW1zL2FwcGxpY2F0aW9udGllciI6IlVubGltaXRlZCIsImh0dHA6Ly93c28yLm9yZy9jbGFpbXMvYXBpY29udGV4dCI6Ii9hY3RvcnMvdjIiLCJodHRwOi8vd3NvMi5vcmcvY2xhaW1zL3ZlcnNpb24iOiJ2MiIsImh0dHA6Ly93c28yLm9yZy9jbGFpbXMvdGllciI6IlVubGltaXRlZCIsImh0dHA6Ly93c28yLm9yZy9jbGFpbXMva2V5dHlwZSI6IlBST0RVQ1RJT04iLCJodHRwOi8vd3NvMi5vcmcvY2xhaW1zL3VzZXJ0eXBlIjoiQVBQTElDQVRJT05fVVNFUiIsImh0dHA6Ly93c28yLm9yZy9jbGFpbXMvZW5kdXNlciI6InRlc3R1c2VyQGNhcmJvbi5zdXBlciIsImh0dHA6Ly93c28yLm9yZy9jbGFpbXMvZW5kdXNlclRlbmFudElkIjoiLTEyMzQiLCJodHRwOi8vd3NvMi5vcmcvY2xhaW1zL2VtYWlsYWRkcmVzcyI6InRlc3R1c2VyQHRlc3QuY29tIiwiaHR0cDovL3dzbzIub3JnL2NsYWltcy9mdWxsbmFtZSI6IlRlc3QgVXNlciIsImh0dHA6Ly93c28yLm9yZy9jbGFpbXMvZ2l2ZW5uYW1lIjoiVGVzdCIsImh0dHA6Ly93c28yLm9yZy9jbGFpbXMvbGFzdG5hbWUiOiJVc2VyIiwiaHR0cDovL3dzbzIub3JnL2NsYWltcy9yb2xlIjoiSW50ZXJuYWwvZXZlcnlvbmUsSW50ZXJuYWwvYWJhY28tYWRtaW4ifQ==.TkpN470PCLQwov15jQsezg6WYMhd38rRyxKaRhCBMvCcMnhn8mrHfXFwReYMrY2yD5RfWjp3o3jsqr/TmuccuqmzZt/jplSzrsBqN0vM+Un38xWpsJwlIcWKIuTPNlv3w/1B0Qb+FiwDd/g8im02mjRluZyXwqXooeDRv0QgVTk=";

/// Inside the fixture token's validity once `exp` is read as milliseconds.
const TOKEN_1024_VALID_AT: i64 = 1_496_900_000;

/// A generated 2048-bit key shared by the tests (generation costs a noticeable fraction of a
/// second in debug builds).
fn signer() -> &'static RsaKeyPair {
    static SIGNER: OnceLock<RsaKeyPair> = OnceLock::new();
    SIGNER.get_or_init(|| RsaKeyPair::generate(KeySize::Rsa2048).unwrap())
}

fn signer_keys() -> PublicKeys {
    PublicKeys::new(vec![
        PublicKey::from_der(signer().public_key().as_ref()).unwrap()
    ])
}

fn key_1024() -> PublicKeys {
    PublicKeys::from_config_value(KEY_1024_SPKI_B64).unwrap()
}

fn url(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

fn std_padded(value: &Value) -> String {
    STANDARD.encode(serde_json::to_vec(value).unwrap())
}

/// Signs `header.payload` as given, returning the full token with a signature encoded by
/// `encode_signature`.
fn sign(header: &str, payload: &str, encode_signature: fn(&[u8]) -> String) -> String {
    let signed = format!("{header}.{payload}");
    let mut signature = vec![0; signer().public_modulus_len()];
    signer()
        .sign(
            &RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            signed.as_bytes(),
            &mut signature,
        )
        .unwrap();
    format!("{signed}.{}", encode_signature(&signature))
}

fn sign_url(payload: &Value) -> String {
    sign(
        &url(&json!({"alg": "RS256", "typ": "JWT"})),
        &url(payload),
        |bytes| URL_SAFE_NO_PAD.encode(bytes),
    )
}

fn gateway_claims(exp: i64) -> Value {
    json!({
        "iss": "wso2.org/products/am",
        "exp": exp,
        ENDUSER_CLAIM: "jdoe@carbon.super",
        ROLE_CLAIM: "Internal/everyone, Internal/abaco-privileged",
    })
}

fn check_err(token: &str, keys: &[PublicKey], expect: IdentityError) {
    assert_eq!(verify(token, keys, NOW), Err(expect), "token: {token:?}");
}

fn check_malformed(token: &str) {
    let keys = signer_keys();
    match verify(token, &keys, NOW) {
        Err(IdentityError::Malformed(_)) => {}
        other => panic!("expected Malformed for {token:?}, got {other:?}"),
    }
}

#[test]
fn token_signed_by_generated_key_verifies() {
    let token = sign_url(&gateway_claims(NOW + 300));
    let claims = verify(&token, &signer_keys(), NOW).unwrap();
    assert_eq!(claims.user(), Some("jdoe"));
    assert_eq!(
        claims.roles(),
        ["Internal/everyone", "Internal/abaco-privileged"]
    );
    assert_eq!(claims.exp(), Some(NOW + 300));
    assert_eq!(claims.tenant(), None);
}

#[test]
fn standard_base64_padded_segments_and_millisecond_exp_verify() {
    let header = std_padded(&json!({"typ": "JWT", "alg": "SHA256withRSA", "x5t": "abc"}));
    // Pad the payload until its encoding needs `=` and uses `+` or `/`, the shapes a strict
    // base64url decoder rejects.
    let mut filler = String::new();
    let payload = loop {
        let mut claims = gateway_claims((NOW + 300) * 1000);
        claims["filler"] = json!(filler);
        claims["binaryish"] = json!("\u{fb}\u{ff}\u{fe}>?");
        let payload = std_padded(&claims);
        if payload.ends_with('=') && payload.contains(['+', '/']) {
            break payload;
        }
        filler.push('x');
    };
    let token = sign(&header, &payload, |bytes| STANDARD.encode(bytes));
    let claims = verify(&token, &signer_keys(), NOW).unwrap();
    assert_eq!(claims.exp(), Some(NOW + 300));
    assert_eq!(claims.user(), Some("jdoe"));

    let expired = sign(
        &header,
        &std_padded(&gateway_claims((NOW - 300) * 1000)),
        |bytes| STANDARD.encode(bytes),
    );
    check_err(
        &expired,
        &signer_keys(),
        IdentityError::Expired { exp: NOW - 300 },
    );
}

#[test]
fn surrounding_whitespace_and_escaped_newlines_are_stripped() {
    let token = sign_url(&gateway_claims(NOW + 300));
    for wrapped in [
        format!("{token}\n"),
        format!("  {token}\r\n"),
        format!("\t{token} \n\n"),
        format!("{token}\\n"),
        format!("{token}\\r\\n "),
    ] {
        assert!(verify(&wrapped, &signer_keys(), NOW).is_ok(), "{wrapped:?}");
    }
}

#[test]
fn alg_none_is_rejected() {
    let payload = url(&gateway_claims(NOW + 300));
    for alg in ["none", "None", "NONE"] {
        let header = url(&json!({"alg": alg, "typ": "JWT"}));
        check_err(
            &format!("{header}.{payload}."),
            &signer_keys(),
            IdentityError::UnsupportedAlgorithm(alg.into()),
        );
    }
}

#[test]
fn hs256_signed_with_the_public_key_is_rejected() {
    // The classic confusion: an attacker HMACs with the (public) verification key as secret,
    // hoping the verifier feeds the same bytes to HMAC.
    let spki_der = STANDARD.decode(KEY_1024_SPKI_B64).unwrap();
    let payload = url(&gateway_claims(NOW + 300));
    for alg in ["HS256", "HS384", "HS512"] {
        let header = url(&json!({"alg": alg, "typ": "JWT"}));
        let signed = format!("{header}.{payload}");
        for secret in [spki_der.as_slice(), KEY_1024_SPKI_PEM.as_bytes()] {
            let tag = hmac::sign(
                &hmac::Key::new(hmac::HMAC_SHA256, secret),
                signed.as_bytes(),
            );
            let token = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
            check_err(
                &token,
                &key_1024(),
                IdentityError::UnsupportedAlgorithm(alg.into()),
            );
        }
    }
}

#[test]
fn other_rsa_and_ec_algorithms_are_rejected() {
    let payload = url(&gateway_claims(NOW + 300));
    for alg in ["RS384", "RS512", "PS256", "ES256", "rs256", "EdDSA"] {
        let token = sign(&url(&json!({"alg": alg})), &payload, |bytes| {
            URL_SAFE_NO_PAD.encode(bytes)
        });
        check_err(
            &token,
            &signer_keys(),
            IdentityError::UnsupportedAlgorithm(alg.into()),
        );
    }
}

#[test]
fn a_missing_or_non_string_alg_is_malformed() {
    let payload = url(&gateway_claims(NOW + 300));
    for header in [json!({"typ": "JWT"}), json!({"alg": 256})] {
        let token = sign(&url(&header), &payload, |bytes| {
            URL_SAFE_NO_PAD.encode(bytes)
        });
        check_malformed(&token);
    }
}

#[test]
fn a_token_signed_by_another_key_is_rejected() {
    let token = sign_url(&gateway_claims(NOW + 300));
    check_err(&token, &key_1024(), IdentityError::BadSignature);
    check_err(TOKEN_1024, &signer_keys(), IdentityError::BadSignature);
}

#[test]
fn any_of_several_keys_may_verify() {
    let mut keys = key_1024();
    keys.push(signer_keys()[0].clone());
    assert!(verify(&sign_url(&gateway_claims(NOW + 300)), &keys, NOW).is_ok());
    assert!(verify(TOKEN_1024, &keys, TOKEN_1024_VALID_AT).is_ok());
}

#[test]
fn expiry_is_enforced_with_leeway() {
    let keys = signer_keys();
    assert!(verify(&sign_url(&gateway_claims(NOW - LEEWAY_SECS)), &keys, NOW).is_ok());
    check_err(
        &sign_url(&gateway_claims(NOW - LEEWAY_SECS - 1)),
        &keys,
        IdentityError::Expired {
            exp: NOW - LEEWAY_SECS - 1,
        },
    );
    check_err(
        &sign_url(&json!({"sub": "x", "exp": (NOW - 3600) as f64 + 0.5})),
        &keys,
        IdentityError::Expired { exp: NOW - 3600 },
    );
}

#[test]
fn a_missing_exp_is_allowed_and_a_non_numeric_one_is_malformed() {
    let keys = signer_keys();
    let claims = verify(&sign_url(&json!({"sub": "jdoe"})), &keys, NOW).unwrap();
    assert_eq!(claims.exp(), None);
    check_malformed(&sign_url(&json!({"sub": "jdoe", "exp": "tomorrow"})));
}

#[test]
fn abaco_seconds_rule_compares_exp_as_seconds() {
    let keys = signer_keys();
    let millis = sign_url(&gateway_claims((NOW - 3600) * 1000));
    assert!(verify_with(&millis, &keys, NOW, ExpiryRule::AbacoSeconds).is_ok());
    let seconds = sign_url(&gateway_claims(NOW - 3600));
    check_err(&seconds, &keys, IdentityError::Expired { exp: NOW - 3600 });
    assert_eq!(
        verify_with(&seconds, &keys, NOW, ExpiryRule::AbacoSeconds),
        Err(IdentityError::Expired { exp: NOW - 3600 })
    );
}

#[test]
fn a_tampered_token_is_rejected() {
    let token = sign_url(&gateway_claims(NOW + 300));
    let segments: Vec<&str> = token.split('.').collect();

    let mut elevated = gateway_claims(NOW + 300);
    elevated[ROLE_CLAIM] = json!("Internal/abaco-admin");
    let forged = format!("{}.{}.{}", segments[0], url(&elevated), segments[2]);
    check_err(&forged, &signer_keys(), IdentityError::BadSignature);

    // Re-encoding the same payload in another base64 flavour changes the signed bytes.
    let reencoded = format!(
        "{}.{}.{}",
        segments[0],
        std_padded(&gateway_claims(NOW + 300)),
        segments[2]
    );
    if reencoded != token {
        check_err(&reencoded, &signer_keys(), IdentityError::BadSignature);
    }

    let mut signature = URL_SAFE_NO_PAD.decode(segments[2]).unwrap();
    signature[10] ^= 1;
    let flipped = format!(
        "{}.{}.{}",
        segments[0],
        segments[1],
        URL_SAFE_NO_PAD.encode(&signature)
    );
    check_err(&flipped, &signer_keys(), IdentityError::BadSignature);
    check_err(
        &format!("{}.{}.", segments[0], segments[1]),
        &signer_keys(),
        IdentityError::BadSignature,
    );
}

#[test]
fn garbage_is_malformed() {
    let header = url(&json!({"alg": "RS256"}));
    let payload = url(&json!({"sub": "x"}));
    for token in [
        String::new(),
        "   ".into(),
        "abc".into(),
        "a.b".into(),
        "a.b.c.d".into(),
        "!!!.???.***".into(),
        "....".into(),
        format!("{header}.{payload}"),
        format!("{header}.{payload}.sig.extra"),
        format!("{header}.not base64!.sig"),
        format!("{}.{payload}.c2ln", URL_SAFE_NO_PAD.encode("not json")),
        format!("{}.{payload}.c2ln", url(&json!(["alg", "RS256"]))),
        format!("{header}.{}.c2ln", url(&json!("a string"))),
        format!("{header}.{}.c2ln", URL_SAFE_NO_PAD.encode([0xff, 0xfe])),
        format!("{header}.{payload}.%%%"),
    ] {
        check_malformed(&token);
    }
}

#[test]
fn an_empty_key_set_is_reported() {
    check_err(
        &sign_url(&gateway_claims(NOW + 300)),
        &[],
        IdentityError::NoKeys,
    );
}

#[test]
fn a_1024_bit_gateway_token_verifies() {
    let keys = key_1024();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].bits(), 1024);

    let claims = verify(TOKEN_1024, &keys, TOKEN_1024_VALID_AT).unwrap();
    assert_eq!(claims.user(), Some("testuser"));
    assert_eq!(
        claims.roles(),
        ["Internal/everyone", "Internal/abaco-admin"]
    );
    assert_eq!(claims.exp(), Some(1_496_944_476));

    // Read as milliseconds the token expired in 2017; read as seconds, as Abaco did, it never
    // expires.
    check_err(
        TOKEN_1024,
        &keys,
        IdentityError::Expired { exp: 1_496_944_476 },
    );
    assert!(verify_with(TOKEN_1024, &keys, NOW, ExpiryRule::AbacoSeconds).is_ok());
    assert!(verify_with(
        &format!("{TOKEN_1024}\n"),
        &keys,
        NOW,
        ExpiryRule::AbacoSeconds
    )
    .is_ok());
}

#[test]
fn public_keys_load_from_every_config_shape() {
    let escaped = KEY_1024_SPKI_PEM.replace('\n', "\\n");
    let wrapped: String = KEY_1024_SPKI_B64
        .as_bytes()
        .chunks(64)
        .map(|line| format!("{}\n", std::str::from_utf8(line).unwrap()))
        .collect();
    let url_safe = URL_SAFE_NO_PAD.encode(STANDARD.decode(KEY_1024_SPKI_B64).unwrap());
    for value in [
        KEY_1024_SPKI_B64,
        &format!("  {KEY_1024_SPKI_B64}\n"),
        KEY_1024_SPKI_PEM,
        KEY_1024_PKCS1_PEM,
        &escaped,
        &wrapped,
        &url_safe,
    ] {
        let keys = PublicKeys::from_config_value(value).unwrap();
        assert_eq!(keys.len(), 1, "{value:?}");
        assert!(
            verify(TOKEN_1024, &keys, TOKEN_1024_VALID_AT).is_ok(),
            "{value:?}"
        );
    }

    let both =
        PublicKeys::from_config_value(&format!("{KEY_1024_SPKI_PEM}{KEY_1024_PKCS1_PEM}")).unwrap();
    assert_eq!(both.len(), 2);

    let pkcs8 = signer().as_der().unwrap();
    let pkcs1_der = signer().public_key().as_ref().to_vec();
    let pem = format!(
        "-----BEGIN RSA PUBLIC KEY-----\n{}\n-----END RSA PUBLIC KEY-----\n",
        STANDARD.encode(&pkcs1_der)
    );
    let generated = PublicKeys::from_config_value(&pem).unwrap();
    assert_eq!(generated[0].bits(), 2048);
    assert!(verify(&sign_url(&gateway_claims(NOW + 60)), &generated, NOW).is_ok());

    // A private key, a certificate, nonsense and nothing are refused.
    let private = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        STANDARD.encode(pkcs8.as_ref())
    );
    for value in [
        private.as_str(),
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
        "-----BEGIN PUBLIC KEY-----\nMIGfMA0G",
        "not a key",
        "c2hvcnQ=",
    ] {
        assert!(
            matches!(
                PublicKeys::from_config_value(value),
                Err(IdentityError::InvalidKey(_))
            ),
            "{value:?}"
        );
    }
    assert_eq!(
        PublicKeys::from_config_value("  ").unwrap_err(),
        IdentityError::NoKeys
    );
}

#[test]
fn keys_under_1024_bits_are_refused() {
    let n = [0xc3u8; 64];
    assert!(matches!(
        PublicKey::from_components(&n, &[1, 0, 1]),
        Err(IdentityError::InvalidKey(_))
    ));
}

#[test]
fn jwks_rsa_keys_are_parsed_with_their_kid() {
    let jwks = json!({"keys": [
        {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA", "kid": "ec"},
        {"kty": "RSA", "use": "enc", "n": KEY_1024_N, "e": "AQAB", "kid": "encryption"},
        {"kty": "RSA", "use": "sig", "alg": "RS256", "n": KEY_1024_N, "e": "AQAB", "kid": "gateway-1"},
        {"kty": "RSA", "n": format!("AAAA{KEY_1024_N}"), "e": "AAEAAQ"},
    ]})
    .to_string();
    let keys = PublicKeys::from_jwks_json(&jwks).unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].kid(), Some("gateway-1"));
    assert_eq!(keys[0].bits(), 1024);
    assert_eq!(keys[1].kid(), None);
    assert!(verify(TOKEN_1024, &keys[..1], TOKEN_1024_VALID_AT).is_ok());
    assert!(verify(TOKEN_1024, &keys[1..], TOKEN_1024_VALID_AT).is_ok());

    let single = json!({"kty": "RSA", "n": KEY_1024_N, "e": "AQAB", "kid": "k"}).to_string();
    assert_eq!(
        PublicKeys::from_config_value(&single).unwrap()[0].kid(),
        Some("k")
    );

    for bad in [
        "not json",
        "[]",
        r#"{"keys": {}}"#,
        r#"{"keys": []}"#,
        r#"{"keys": [{"kty": "EC"}]}"#,
        r#"{"keys": [{"kty": "RSA", "e": "AQAB"}]}"#,
        r#"{"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}"#,
    ] {
        assert!(
            matches!(
                PublicKeys::from_jwks_json(bad),
                Err(IdentityError::InvalidKey(_))
            ),
            "{bad}"
        );
    }
}

#[test]
fn claim_helpers_fall_back_sensibly() {
    let claims = |value: Value| match value {
        Value::Object(map) => Claims(map),
        _ => unreachable!(),
    };

    let subject_only =
        claims(json!({"sub": "alice", "roles": ["a", " b ", ""], "abaco_tenant": "DEV"}));
    assert_eq!(subject_only.user(), Some("alice"));
    assert_eq!(subject_only.roles(), ["a", "b"]);
    assert_eq!(subject_only.tenant(), Some("DEV"));

    let empty_enduser = claims(json!({ENDUSER_CLAIM: "@carbon.super", "sub": "bob"}));
    assert_eq!(empty_enduser.user(), Some("bob"));

    let plain_enduser = claims(json!({ENDUSER_CLAIM: "carol", ROLE_CLAIM: ""}));
    assert_eq!(plain_enduser.user(), Some("carol"));
    assert!(plain_enduser.roles().is_empty());

    let array_roles =
        claims(json!({ROLE_CLAIM: ["Internal/everyone", "x,y"], "roles": ["ignored"]}));
    assert_eq!(array_roles.roles(), ["Internal/everyone", "x", "y"]);

    let nothing = claims(json!({"sub": 7, "exp": "soon"}));
    assert_eq!(nothing.user(), None);
    assert!(nothing.roles().is_empty());
    assert_eq!(nothing.exp(), None);

    assert_eq!(
        claims(json!({"exp": 1_700_000_000})).exp(),
        Some(1_700_000_000)
    );
    assert_eq!(
        claims(json!({"exp": 1_700_000_000_123_i64})).exp(),
        Some(1_700_000_000)
    );
}
