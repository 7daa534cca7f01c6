//! The platform's own token authority: an RSA-2048 key that signs standard RS256 JWTs (base64url
//! segments, `exp` in seconds) which [`crate::verify`] accepts through [`TokenIssuer::public_key`].
//! The key lives in memory as PKCS#8 DER; persisting it (and protecting it at rest, for example
//! with [`crate::SecretBox`]) is the caller's business — this module does no IO.

use base64::Engine as _;
use std::fmt;

use aws_lc_rs::digest::{digest, SHA256};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{KeyPair, RsaKeyPair, RSA_PKCS1_SHA256};
use serde_json::{json, Map, Value};

use crate::b64;
use crate::error::{IdentityError, Result};
use crate::jwt::PublicKey;
use crate::random;

/// A signing key and the tokens it issues.
pub struct TokenIssuer {
    key_pair: RsaKeyPair,
    pkcs8: Vec<u8>,
    public_key: PublicKey,
    kid: String,
}

impl TokenIssuer {
    /// Generates a fresh RSA-2048 key.
    pub fn generate() -> Result<TokenIssuer> {
        let key_pair = RsaKeyPair::generate(KeySize::Rsa2048)
            .map_err(|_| IdentityError::Crypto("RSA key generation failed"))?;
        let pkcs8 = key_pair
            .as_der()
            .map_err(|_| IdentityError::Crypto("cannot encode the RSA key as PKCS#8"))?;
        TokenIssuer::from_pkcs8(pkcs8.as_ref())
    }

    /// Loads a key previously saved with [`TokenIssuer::to_pkcs8`] (unencrypted PKCS#8 DER,
    /// RSA 2048 to 8192 bits).
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<TokenIssuer> {
        let key_pair = RsaKeyPair::from_pkcs8(pkcs8).map_err(|err| {
            IdentityError::InvalidKey(format!("RSA private key rejected ({err})"))
        })?;
        let public_der = key_pair.public_key().as_ref();
        // The key id is a digest of the public key, so every process loading the same key
        // announces the same id and a rotated key gets a new one.
        let kid = b64::encode_url(&digest(&SHA256, public_der).as_ref()[..16]);
        let public_key = PublicKey::from_der(public_der)?.with_kid(kid.clone());
        Ok(TokenIssuer {
            key_pair,
            pkcs8: pkcs8.to_vec(),
            public_key,
            kid,
        })
    }

    /// The private key as PKCS#8 DER, for the caller to persist.
    pub fn to_pkcs8(&self) -> Vec<u8> {
        self.pkcs8.clone()
    }

    /// The public half, labelled with [`TokenIssuer::kid`]; `verify` accepts tokens signed here.
    pub fn public_key(&self) -> PublicKey {
        self.public_key.clone()
    }

    /// The public key as base64 of its DER encoding (PKCS#1 RSAPublicKey), the form
    /// `[web] apim_public_key` accepts: lets a test or a gateway publish this key.
    pub fn public_key_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.key_pair.public_key().as_ref())
    }

    /// The key id written into each token header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Signs a token carrying `claims` plus `iat` = `now_unix`, `exp` = `now_unix + ttl_secs`
    /// (seconds) and a random `jti`. Those three are the issuer's to set: values for them in
    /// `claims` are replaced. A non-positive `ttl_secs` yields an already expired token.
    pub fn issue(
        &self,
        claims: Map<String, Value>,
        ttl_secs: i64,
        now_unix: i64,
    ) -> Result<String> {
        let header = json!({ "alg": "RS256", "typ": "JWT", "kid": self.kid });
        let mut payload = claims;
        payload.insert("iat".into(), now_unix.into());
        payload.insert("exp".into(), now_unix.saturating_add(ttl_secs).into());
        payload.insert("jti".into(), b64::encode_url(&random::bytes::<16>()).into());

        let header_json = serde_json::to_vec(&header)
            .map_err(|_| IdentityError::Crypto("cannot serialise the token header"))?;
        let payload_json = serde_json::to_vec(&payload)
            .map_err(|_| IdentityError::Crypto("cannot serialise the token claims"))?;
        let signed = format!(
            "{}.{}",
            b64::encode_url(&header_json),
            b64::encode_url(&payload_json)
        );
        let mut signature = vec![0u8; self.key_pair.public_modulus_len()];
        self.key_pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signed.as_bytes(),
                &mut signature,
            )
            .map_err(|_| IdentityError::Crypto("RSA signing failed"))?;
        Ok(format!("{signed}.{}", b64::encode_url(&signature)))
    }
}

impl fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
