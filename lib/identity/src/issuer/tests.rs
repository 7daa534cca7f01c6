//! Tests of the platform's token issuer: its tokens verify with its public key, survive a
//! PKCS#8 round trip, use canonical base64url and carry the issuer-controlled claims.

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Map, Value};

use super::*;
use crate::jwt::{verify, TENANT_CLAIM};

const NOW: i64 = 1_795_392_000;

fn issuer() -> &'static TokenIssuer {
    static ISSUER: OnceLock<TokenIssuer> = OnceLock::new();
    ISSUER.get_or_init(|| TokenIssuer::generate().unwrap())
}

fn claims(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => unreachable!(),
    }
}

fn header_of(token: &str) -> Value {
    let header = token.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap()
}

#[test]
fn issued_tokens_verify_with_the_issuer_key() {
    let token = issuer()
        .issue(
            claims(json!({"sub": "jdoe", TENANT_CLAIM: "DEV", "roles": ["Internal/abaco-user"]})),
            3600,
            NOW,
        )
        .unwrap();
    let verified = verify(&token, &[issuer().public_key()], NOW + 10).unwrap();
    assert_eq!(verified.user(), Some("jdoe"));
    assert_eq!(verified.tenant(), Some("DEV"));
    assert_eq!(verified.roles(), ["Internal/abaco-user"]);
    assert_eq!(verified.get("iat"), Some(&json!(NOW)));
    assert_eq!(verified.exp(), Some(NOW + 3600));
    assert!(verified.get("jti").and_then(Value::as_str).is_some());

    assert_eq!(issuer().public_key().bits(), 2048);
    assert_eq!(issuer().public_key().kid(), Some(issuer().kid()));
    assert_eq!(
        header_of(&token),
        json!({"alg": "RS256", "typ": "JWT", "kid": issuer().kid()})
    );
}

#[test]
fn issued_tokens_are_canonical_base64url() {
    let token = issuer().issue(Map::new(), 60, NOW).unwrap();
    assert_eq!(token.split('.').count(), 3);
    assert!(
        token
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_.".contains(&byte)),
        "{token}"
    );
}

#[test]
fn issuer_controls_iat_exp_and_jti() {
    let token = issuer()
        .issue(
            claims(json!({"sub": "x", "exp": 9_999_999_999_i64, "iat": 0, "jti": "mine"})),
            60,
            NOW,
        )
        .unwrap();
    let verified = verify(&token, &[issuer().public_key()], NOW).unwrap();
    assert_eq!(verified.exp(), Some(NOW + 60));
    assert_eq!(verified.get("iat"), Some(&json!(NOW)));
    assert_ne!(verified.get("jti"), Some(&json!("mine")));

    let other = issuer().issue(Map::new(), 60, NOW).unwrap();
    let other = verify(&other, &[issuer().public_key()], NOW).unwrap();
    assert_ne!(verified.get("jti"), other.get("jti"));
}

#[test]
fn expired_issued_tokens_are_rejected() {
    let token = issuer().issue(Map::new(), -120, NOW).unwrap();
    assert_eq!(
        verify(&token, &[issuer().public_key()], NOW),
        Err(IdentityError::Expired { exp: NOW - 120 })
    );
    let token = issuer().issue(Map::new(), 60, NOW).unwrap();
    assert!(matches!(
        verify(&token, &[issuer().public_key()], NOW + 60 + LEEWAY + 1),
        Err(IdentityError::Expired { .. })
    ));
}

const LEEWAY: i64 = crate::jwt::LEEWAY_SECS;

#[test]
fn pkcs8_round_trip_keeps_the_key() {
    let pkcs8 = issuer().to_pkcs8();
    let reloaded = TokenIssuer::from_pkcs8(&pkcs8).unwrap();
    assert_eq!(reloaded.kid(), issuer().kid());
    assert_eq!(reloaded.to_pkcs8(), pkcs8);

    let token = reloaded
        .issue(claims(json!({"sub": "x"})), 60, NOW)
        .unwrap();
    assert!(verify(&token, &[issuer().public_key()], NOW).is_ok());
}

#[test]
fn a_different_issuer_does_not_verify() {
    let stranger = TokenIssuer::generate().unwrap();
    assert_ne!(stranger.kid(), issuer().kid());
    let token = stranger.issue(Map::new(), 60, NOW).unwrap();
    assert_eq!(
        verify(&token, &[issuer().public_key()], NOW),
        Err(IdentityError::BadSignature)
    );
}

#[test]
fn bad_pkcs8_is_rejected_and_debug_hides_the_key() {
    assert!(matches!(
        TokenIssuer::from_pkcs8(b"not a key"),
        Err(IdentityError::InvalidKey(_))
    ));
    let debug = format!("{:?}", issuer());
    assert!(debug.contains(issuer().kid()));
    assert!(!debug.contains("pkcs8"));
}
