//! Identity: who is calling and what they may claim. This crate verifies the RS256 JWTs of
//! Abaco's identity gateway (tolerating their non-standard encodings, never their signatures),
//! issues the platform's own tokens, encrypts secret configuration values at rest and hashes
//! OAuth client secrets. It works on bytes and strings handed in by callers: it reads no files,
//! knows no HTTP headers or configuration sections, and has no async runtime. All cryptography
//! goes through `aws-lc-rs`, the provider rustls already brings into the tree.

pub mod error;
pub mod issuer;
pub mod jwt;
pub mod password;
pub mod secrets;

mod b64;
mod random;

pub use error::{IdentityError, Result};
pub use issuer::TokenIssuer;
pub use jwt::{verify, verify_with, Claims, ExpiryRule, PublicKey, PublicKeys};
pub use password::{hash_secret, new_secret, verify_secret};
pub use secrets::SecretBox;
