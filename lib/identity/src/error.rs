//! The one error type of the identity crate. Every variant is a permanent verdict on the input
//! (a token, a key, a ciphertext): retrying the same call cannot succeed, so callers map these to
//! "not authenticated" or to a configuration error rather than retrying. The API crate alone
//! decides which HTTP status each becomes.

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, IdentityError>;

/// Why an identity operation failed. None of these is transient: do not retry.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    /// The token is not three decodable segments with JSON-object header and payload, or a
    /// claim the verifier relies on (`exp`) has the wrong type.
    #[error("malformed token: {0}")]
    Malformed(String),

    /// The token's header names an algorithm other than RS256 (`none`, HS256, ...).
    #[error("unsupported token algorithm: {0}")]
    UnsupportedAlgorithm(String),

    /// No configured key verifies the signature: forged, tampered or signed by someone else.
    #[error("token signature does not verify with any configured key")]
    BadSignature,

    /// The signature is good but `exp` (in Unix seconds, after millisecond normalisation)
    /// lies in the past beyond the leeway.
    #[error("token expired at {exp}")]
    Expired {
        /// The expiry, in Unix seconds.
        exp: i64,
    },

    /// Verification was asked for with an empty key set; a configuration problem.
    #[error("no public keys configured to verify tokens")]
    NoKeys,

    /// Key material (a public key, a private key or a secret-box key) was rejected.
    #[error("invalid key: {0}")]
    InvalidKey(String),

    /// A stored secret could not be decrypted: wrong key, tampered or not in the `v1:` format.
    #[error("cannot decrypt secret: {0}")]
    Decrypt(&'static str),

    /// A cryptographic primitive failed where it should not (signing with a valid key).
    #[error("cryptographic failure: {0}")]
    Crypto(&'static str),
}
