//! Encryption at rest of secret configuration values (actor default environments, client
//! secrets) with AES-256-GCM. A stored value reads `v1:` + base64url(nonce ‖ ciphertext ‖ tag)
//! with a random 96-bit nonce per value; the version prefix lets a later scheme coexist and lets
//! callers tell encrypted values from legacy plaintext. The key arrives as a string from the
//! caller's configuration; this module never reads it from anywhere itself.

use std::fmt;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::digest::{digest, SHA256};

use crate::b64;
use crate::error::{IdentityError, Result};
use crate::random;

/// Prefix of every value this module encrypts.
pub const PREFIX: &str = "v1:";

const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
/// Shortest key material accepted before SHA-256 derivation.
const MIN_KEY_MATERIAL: usize = 16;

/// An AES-256-GCM key for sealing and opening secret values.
pub struct SecretBox {
    key: LessSafeKey,
}

impl SecretBox {
    /// Builds a box from a key string: base64 (standard or URL-safe, padding optional) of 32
    /// bytes, used as the AES-256 key — a Fernet key is such a string. Decoded material of another
    /// length (at least 16 bytes) is hashed with SHA-256 into the key.
    pub fn new(key: &str) -> Result<SecretBox> {
        let material = b64::decode_lenient(key.trim())
            .ok_or_else(|| IdentityError::InvalidKey("secret key is not base64".into()))?;
        let key_bytes: [u8; KEY_LEN] = match <[u8; KEY_LEN]>::try_from(material.as_slice()) {
            Ok(exact) => exact,
            Err(_) if material.len() >= MIN_KEY_MATERIAL => {
                let mut derived = [0u8; KEY_LEN];
                derived.copy_from_slice(digest(&SHA256, &material).as_ref());
                derived
            }
            Err(_) => {
                return Err(IdentityError::InvalidKey(format!(
                    "secret key holds {} bytes; at least {MIN_KEY_MATERIAL} needed",
                    material.len()
                )))
            }
        };
        let unbound = UnboundKey::new(&AES_256_GCM, &key_bytes)
            .map_err(|_| IdentityError::InvalidKey("AES-256 key rejected".into()))?;
        Ok(SecretBox {
            key: LessSafeKey::new(unbound),
        })
    }

    /// A fresh random key string: 32 bytes in padded URL-safe base64, so it is also a valid
    /// Fernet key.
    pub fn generate_key() -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE.encode(random::bytes::<KEY_LEN>())
    }

    /// Encrypts `plaintext` into `v1:` + base64url(nonce ‖ ciphertext ‖ tag).
    ///
    /// # Panics
    /// Only if `plaintext` exceeds AES-GCM's limit of about 64 GiB.
    pub fn encrypt(&self, plaintext: &str) -> String {
        let nonce_bytes = random::bytes::<NONCE_LEN>();
        let mut sealed = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        sealed.extend_from_slice(&nonce_bytes);
        let mut in_out = plaintext.as_bytes().to_vec();
        #[allow(clippy::expect_used)]
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::empty(),
                &mut in_out,
            )
            .expect("AES-GCM sealing fails only past its ~64 GiB input limit");
        sealed.extend_from_slice(&in_out);
        format!("{PREFIX}{}", b64::encode_url(&sealed))
    }

    /// Decrypts a value produced by [`SecretBox::encrypt`] with the same key. A wrong key or any
    /// change to the value fails with [`IdentityError::Decrypt`].
    pub fn decrypt(&self, value: &str) -> Result<String> {
        let encoded = value
            .trim()
            .strip_prefix(PREFIX)
            .ok_or(IdentityError::Decrypt("value is not `v1:` encrypted"))?;
        let sealed =
            b64::decode_lenient(encoded).ok_or(IdentityError::Decrypt("value is not base64url"))?;
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(IdentityError::Decrypt("value is too short"));
        }
        let (nonce_bytes, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce_bytes)
            .map_err(|_| IdentityError::Decrypt("bad nonce"))?;
        let mut in_out = ciphertext.to_vec();
        let plaintext = self
            .key
            .open_in_place(nonce, Aad::empty(), &mut in_out)
            .map_err(|_| IdentityError::Decrypt("wrong key or tampered value"))?;
        String::from_utf8(plaintext.to_vec())
            .map_err(|_| IdentityError::Decrypt("plaintext is not UTF-8"))
    }

    /// Whether `value` looks like the output of [`SecretBox::encrypt`] (see [`is_encrypted`]).
    pub fn is_encrypted(&self, value: &str) -> bool {
        is_encrypted(value)
    }
}

/// Whether `value` has the `v1:` shape: the prefix, base64url, and room for nonce and tag. It
/// does not prove the value decrypts under any particular key.
pub fn is_encrypted(value: &str) -> bool {
    value
        .trim()
        .strip_prefix(PREFIX)
        .and_then(b64::decode_lenient)
        .is_some_and(|sealed| sealed.len() >= NONCE_LEN + TAG_LEN)
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretBox").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
