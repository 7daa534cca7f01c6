//! OAuth client secrets: generation, and salted hashes for storage. Secrets made here are 256
//! random bits, so a salted SHA-256 suffices — a slow password hash protects low-entropy human
//! passwords, which these are not. A stored hash reads `sha256$<salt>$<digest>` (base64url), the
//! algorithm named so another can follow.

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest::{Context, SHA256};

use crate::b64;
use crate::random;

const SCHEME: &str = "sha256";
const SALT_LEN: usize = 16;

/// A new client secret: 32 random bytes as base64url without padding.
pub fn new_secret() -> String {
    b64::encode_url(&random::bytes::<32>())
}

/// A salted hash of `secret` for storage, `sha256$<salt>$<digest>`.
pub fn hash_secret(secret: &str) -> String {
    let salt = random::bytes::<SALT_LEN>();
    format!(
        "{SCHEME}${}${}",
        b64::encode_url(&salt),
        b64::encode_url(&salted_digest(&salt, secret))
    )
}

/// Whether `secret` matches a hash made by [`hash_secret`]; the digests are compared in
/// constant time. A hash in any other format never matches.
pub fn verify_secret(secret: &str, hash: &str) -> bool {
    let mut parts = hash.split('$');
    let (Some(SCHEME), Some(salt), Some(expected), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let (Some(salt), Some(expected)) = (b64::decode_lenient(salt), b64::decode_lenient(expected))
    else {
        return false;
    };
    verify_slices_are_equal(&salted_digest(&salt, secret), &expected).is_ok()
}

fn salted_digest(salt: &[u8], secret: &str) -> Vec<u8> {
    let mut context = Context::new(&SHA256);
    context.update(salt);
    context.update(secret.as_bytes());
    context.finish().as_ref().to_vec()
}

#[cfg(test)]
mod tests;
