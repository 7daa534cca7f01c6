//! Tests of client-secret generation and hashing.

use super::*;

#[test]
fn new_secrets_are_random_base64url() {
    let secret = new_secret();
    assert_eq!(secret.len(), 43);
    assert!(secret
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'));
    assert_ne!(secret, new_secret());
}

#[test]
fn hashes_verify_only_their_secret() {
    let secret = new_secret();
    let hash = hash_secret(&secret);
    assert!(hash.starts_with("sha256$"));
    assert!(!hash.contains(&secret));
    assert!(verify_secret(&secret, &hash));
    assert!(!verify_secret(&new_secret(), &hash));
    assert!(!verify_secret("", &hash));
    assert!(verify_secret("", &hash_secret("")));
}

#[test]
fn salts_differ() {
    assert_ne!(hash_secret("same"), hash_secret("same"));
}

#[test]
fn malformed_hashes_never_match() {
    let hash = hash_secret("s");
    let parts: Vec<&str> = hash.split('$').collect();
    for bad in [
        String::new(),
        "s".into(),
        format!("md5${}${}", parts[1], parts[2]),
        format!("sha256${}", parts[1]),
        format!("sha256${}${}$extra", parts[1], parts[2]),
        format!("sha256$!!!${}", parts[2]),
        format!("sha256${}${}", parts[1], &parts[2][..10]),
    ] {
        assert!(!verify_secret("s", &bad), "{bad}");
    }
}
