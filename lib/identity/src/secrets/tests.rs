//! Tests of secret encryption at rest: round trips, key formats, and refusal of wrong keys and
//! tampered values.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;

use super::*;

fn secret_box() -> SecretBox {
    SecretBox::new(&SecretBox::generate_key()).unwrap()
}

fn check_round_trip(secret_box: &SecretBox, plaintext: &str) {
    let sealed = secret_box.encrypt(plaintext);
    assert!(sealed.starts_with(PREFIX), "{sealed}");
    assert!(is_encrypted(&sealed));
    assert!(secret_box.is_encrypted(&sealed));
    assert_eq!(secret_box.decrypt(&sealed).unwrap(), plaintext);
}

#[test]
fn values_round_trip() {
    let secret_box = secret_box();
    for plaintext in ["", "hunter2", "ünïcødé ✓", &"x".repeat(10_000)] {
        check_round_trip(&secret_box, plaintext);
    }
}

#[test]
fn each_encryption_uses_a_fresh_nonce() {
    let secret_box = secret_box();
    assert_ne!(secret_box.encrypt("same"), secret_box.encrypt("same"));
}

#[test]
fn key_formats() {
    let raw = [7u8; 32];
    // Standard and URL-safe base64, padded or not, of the same 32 bytes make the same key.
    let standard = SecretBox::new(&STANDARD.encode(raw)).unwrap();
    let url_safe = SecretBox::new(&URL_SAFE_NO_PAD.encode(raw)).unwrap();
    assert_eq!(url_safe.decrypt(&standard.encrypt("x")).unwrap(), "x");

    // A Fernet key (the example from the cryptography docs) is accepted, with whitespace.
    let fernet = SecretBox::new(" cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=\n").unwrap();
    check_round_trip(&fernet, "fernet");

    // Material of another length is derived through SHA-256.
    let long = SecretBox::new(&STANDARD.encode([9u8; 48])).unwrap();
    check_round_trip(&long, "derived");

    let generated = SecretBox::generate_key();
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(generated.trim_end_matches('='))
            .unwrap()
            .len(),
        32
    );
    assert_ne!(generated, SecretBox::generate_key());

    for bad in ["", "not base64!", &STANDARD.encode([1u8; 8])] {
        assert!(
            matches!(SecretBox::new(bad), Err(IdentityError::InvalidKey(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn the_wrong_key_fails() {
    let sealed = secret_box().encrypt("secret");
    assert_eq!(
        secret_box().decrypt(&sealed),
        Err(IdentityError::Decrypt("wrong key or tampered value"))
    );
}

#[test]
fn tampering_fails() {
    let secret_box = secret_box();
    let sealed = secret_box.encrypt("secret value");
    let bytes = URL_SAFE_NO_PAD
        .decode(sealed.strip_prefix(PREFIX).unwrap())
        .unwrap();
    // Flip a bit in the nonce, the ciphertext and the tag in turn.
    for index in [0, NONCE_LEN, bytes.len() - 1] {
        let mut tampered = bytes.clone();
        tampered[index] ^= 0x01;
        let tampered = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(&tampered));
        assert_eq!(
            secret_box.decrypt(&tampered),
            Err(IdentityError::Decrypt("wrong key or tampered value"))
        );
    }
    let truncated = format!(
        "{PREFIX}{}",
        URL_SAFE_NO_PAD.encode(&bytes[..bytes.len() - 1])
    );
    assert!(secret_box.decrypt(&truncated).is_err());
}

#[test]
fn non_encrypted_values_are_recognised() {
    let secret_box = secret_box();
    for value in [
        "plain",
        "v1:",
        "v1:!!!",
        "v1:AAAA",
        "v2:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        assert!(!is_encrypted(value), "{value}");
        assert!(matches!(
            secret_box.decrypt(value),
            Err(IdentityError::Decrypt(_))
        ));
    }
}

#[test]
fn debug_hides_the_key() {
    assert_eq!(format!("{:?}", secret_box()), "SecretBox { .. }");
}
