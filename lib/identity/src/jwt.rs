//! RS256 JWTs: tolerant parsing, strict verification. Abaco's identity gateway emits tokens a
//! strict library rejects — segments in standard base64 with `=` padding, `alg` spelled
//! `SHA256withRSA`, `exp` in milliseconds, a 1024-bit signing key, trailing whitespace when the
//! token was pasted from a file — so this module decodes the segments itself and is lenient
//! about encodings only. It is never lenient about the signature: the algorithm must be RSA
//! PKCS#1 v1.5 with SHA-256 and the signature must verify over the first two segments exactly as
//! transmitted. It knows nothing of HTTP headers, tenants' header names or configuration files;
//! callers hand in the token text, the keys and the current time.

use std::fmt;
use std::ops::Deref;

use aws_lc_rs::signature::{
    ParsedPublicKey, RsaParameters, RsaPublicKeyComponents, RsaSubjectPublicKey,
    RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
};
use serde_json::{Map, Value};

use crate::b64;
use crate::error::{IdentityError, Result};

/// Clock skew tolerated when judging `exp`, in seconds.
pub const LEEWAY_SECS: i64 = 30;

/// `exp` values above this are taken as milliseconds (1e11 s is the year 5138).
const MILLIS_THRESHOLD: i64 = 100_000_000_000;

/// The claim holding `user@tenant-domain` in WSO2-issued tokens.
pub const ENDUSER_CLAIM: &str = "http://wso2.org/claims/enduser";
/// The claim holding the comma-separated roles in WSO2-issued tokens.
pub const ROLE_CLAIM: &str = "http://wso2.org/claims/role";
/// The claim the platform's own tokens use to name the tenant.
pub const TENANT_CLAIM: &str = "abaco_tenant";

/// Smallest and largest RSA moduli accepted, in bits. 1024 is below modern guidance but is what
/// Abaco's gateway signs with; the verification algorithm enforces the same range.
const MIN_RSA_BITS: u32 = 1024;
const MAX_RSA_BITS: u32 = 8192;

/// The verification algorithm: PKCS#1 v1.5, SHA-256, 1024–8192-bit moduli.
static RS256: &RsaParameters = &RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY;

/// The payload of a verified token. Helpers read the claims Abaco relies on; everything else is
/// reachable through the map.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Claims(pub Map<String, Value>);

/// How [`verify_with`] judges the `exp` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpiryRule {
    /// An `exp` above 1e11 is read as milliseconds; a token whose `exp` is more than
    /// [`LEEWAY_SECS`] in the past is rejected. A missing `exp` never expires.
    #[default]
    Enforce,
    /// `exp` is compared as seconds whatever its magnitude, as PyJWT 0.2.3 behind Abaco did. A
    /// millisecond `exp` — Abaco's test tokens carry ≈1.49e12, i.e. 2017 — then never expires,
    /// while a real seconds `exp` is still enforced. For compatibility with such tokens only.
    AbacoSeconds,
}

/// One RSA public key that may have signed tokens, with the JWKS key id when it came from one.
#[derive(Clone)]
pub struct PublicKey {
    key: ParsedPublicKey,
    kid: Option<String>,
    bits: u32,
}

/// A set of acceptable signing keys; dereferences to `&[PublicKey]` for [`verify`].
#[derive(Debug, Clone, Default)]
pub struct PublicKeys(Vec<PublicKey>);

/// Verifies `token` against `keys` at `now_unix` (seconds) and returns its claims, enforcing
/// `exp` as described by [`ExpiryRule::Enforce`].
pub fn verify(token: &str, keys: &[PublicKey], now_unix: i64) -> Result<Claims> {
    verify_with(token, keys, now_unix, ExpiryRule::Enforce)
}

/// Verifies `token` like [`verify`], judging `exp` by `rule`.
///
/// Order of checks: shape and encodings (`Malformed`), algorithm (`UnsupportedAlgorithm`),
/// signature (`BadSignature`), then expiry (`Expired`), so that nothing about an unsigned
/// token's claims is reported.
pub fn verify_with(
    token: &str,
    keys: &[PublicKey],
    now_unix: i64,
    rule: ExpiryRule,
) -> Result<Claims> {
    let token = strip_surroundings(token);
    let mut segments = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(malformed("expected three dot-separated segments"));
    };

    let header = decode_json_object(header_b64, "header")?;
    match header.get("alg") {
        Some(Value::String(alg)) if alg == "RS256" || alg == "SHA256withRSA" => {}
        Some(Value::String(alg)) => return Err(IdentityError::UnsupportedAlgorithm(alg.clone())),
        Some(_) => return Err(malformed("header `alg` is not a string")),
        None => return Err(malformed("header has no `alg`")),
    }
    let claims = Claims(decode_json_object(payload_b64, "payload")?);
    let signature = b64::decode_lenient(signature_b64)
        .ok_or_else(|| malformed("signature segment is not base64"))?;

    if keys.is_empty() {
        return Err(IdentityError::NoKeys);
    }
    // The signed message is the ASCII of the first two segments as transmitted, not a
    // re-encoding: Abaco's padded standard base64 only verifies byte for byte.
    let signed = &token[..header_b64.len() + 1 + payload_b64.len()];
    if !keys
        .iter()
        .any(|key| key.verifies(signed.as_bytes(), &signature))
    {
        return Err(IdentityError::BadSignature);
    }

    check_expiry(&claims, now_unix, rule)?;
    Ok(claims)
}

impl Claims {
    /// A claim by name.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    /// The user: the WSO2 `enduser` claim up to its first `@` (`testuser@carbon.super` →
    /// `testuser`), else the `sub` claim. `None` when neither yields a non-empty string.
    pub fn user(&self) -> Option<&str> {
        let enduser = self
            .string(ENDUSER_CLAIM)
            .map(|enduser| enduser.split('@').next().unwrap_or(enduser))
            .filter(|user| !user.is_empty());
        enduser.or_else(|| self.string("sub").filter(|sub| !sub.is_empty()))
    }

    /// The roles: the WSO2 `role` claim split on commas and trimmed, else a `roles` claim (an
    /// array of strings, or a comma-separated string). Empty when neither is present; Abaco's
    /// substitution of `Internal/everyone` for an empty list is the caller's policy.
    pub fn roles(&self) -> Vec<String> {
        match self.get(ROLE_CLAIM) {
            Some(value) => roles_of(value),
            None => self.get("roles").map(roles_of).unwrap_or_default(),
        }
    }

    /// The tenant named by the platform's own tokens (`abaco_tenant`), if any. Gateway tokens
    /// carry the tenant in the HTTP header name instead, which the caller reads.
    pub fn tenant(&self) -> Option<&str> {
        self.string(TENANT_CLAIM)
    }

    /// `exp` in Unix seconds; an `exp` above 1e11 is taken as milliseconds. `None` when the
    /// claim is absent or not a number.
    pub fn exp(&self) -> Option<i64> {
        raw_exp(self.get("exp")?).map(|exp| {
            if exp > MILLIS_THRESHOLD {
                exp / 1000
            } else {
                exp
            }
        })
    }

    fn string(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Value::as_str)
    }
}

impl PublicKey {
    /// Parses a DER RSA public key, either SubjectPublicKeyInfo (`BEGIN PUBLIC KEY`, what Abaco's
    /// `apim_public_key` holds) or PKCS#1 RSAPublicKey (`BEGIN RSA PUBLIC KEY`).
    pub fn from_der(der: &[u8]) -> Result<PublicKey> {
        let rsa = RsaSubjectPublicKey::from_der(der)
            .map_err(|err| invalid_key(format!("not an RSA public key ({err})")))?;
        // `as_ref` is the PKCS#1 encoding whichever form came in.
        let pkcs1 = rsa.as_ref();
        let bits = RsaParameters::public_modulus_len(pkcs1)
            .map_err(|_| invalid_key("cannot read the RSA modulus"))?;
        check_bits(bits)?;
        let key = ParsedPublicKey::new(RS256, pkcs1)
            .map_err(|err| invalid_key(format!("RSA public key rejected ({err})")))?;
        Ok(PublicKey {
            key,
            kid: None,
            bits,
        })
    }

    /// Builds a key from its big-endian modulus and exponent, as a JWK carries them.
    pub fn from_components(n: &[u8], e: &[u8]) -> Result<PublicKey> {
        let n = strip_leading_zeros(n);
        let e = strip_leading_zeros(e);
        let bits = modulus_bits(n);
        check_bits(bits)?;
        let key = RsaPublicKeyComponents { n, e }
            .to_parsed_public_key(RS256)
            .map_err(|err| invalid_key(format!("RSA public key rejected ({err})")))?;
        Ok(PublicKey {
            key,
            kid: None,
            bits,
        })
    }

    /// The same key labelled with a key id.
    pub fn with_kid(mut self, kid: impl Into<String>) -> PublicKey {
        self.kid = Some(kid.into());
        self
    }

    /// The key id, when the key came from a JWKS or from [`crate::TokenIssuer`].
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The modulus size in bits.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        self.key.verify_sig(message, signature).is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("kid", &self.kid)
            .field("bits", &self.bits)
            .finish_non_exhaustive()
    }
}

impl PublicKeys {
    /// A key set from already-parsed keys.
    pub fn new(keys: Vec<PublicKey>) -> PublicKeys {
        PublicKeys(keys)
    }

    /// Parses a configuration value: one or more PEM blocks (`PUBLIC KEY` or `RSA PUBLIC KEY`;
    /// `\n` escapes as found in environment variables are accepted), a JWKS document (a value
    /// starting with `{`), or bare base64 DER (SubjectPublicKeyInfo or PKCS#1), line breaks
    /// allowed.
    pub fn from_config_value(value: &str) -> Result<PublicKeys> {
        let value = value.trim();
        if value.is_empty() {
            return Err(IdentityError::NoKeys);
        }
        if value.starts_with('{') {
            return PublicKeys::from_jwks_json(value);
        }
        let value = value.replace("\\n", "\n");
        if value.contains("-----BEGIN") {
            return parse_pem_blocks(&value);
        }
        let der = decode_base64_text(&value)
            .ok_or_else(|| invalid_key("public key is neither PEM nor base64 DER"))?;
        Ok(PublicKeys(vec![PublicKey::from_der(&der)?]))
    }

    /// Parses a JWKS document (`{"keys": [...]}`, or a single JWK object), keeping the RSA keys
    /// that may sign (`kty` `RSA`, `use` absent or `sig`) with their `kid`.
    pub fn from_jwks_json(json: &str) -> Result<PublicKeys> {
        let document: Value = serde_json::from_str(json)
            .map_err(|err| invalid_key(format!("JWKS is not JSON ({err})")))?;
        let jwks = match document.get("keys") {
            Some(Value::Array(keys)) => keys.iter().collect::<Vec<_>>(),
            Some(_) => return Err(invalid_key("JWKS `keys` is not an array")),
            None if document.is_object() => vec![&document],
            None => return Err(invalid_key("JWKS is not an object")),
        };
        let mut keys = Vec::new();
        for jwk in jwks {
            if let Some(key) = parse_jwk(jwk)? {
                keys.push(key);
            }
        }
        if keys.is_empty() {
            return Err(invalid_key("JWKS holds no RSA signing key"));
        }
        Ok(PublicKeys(keys))
    }

    /// Adds a key to the set.
    pub fn push(&mut self, key: PublicKey) {
        self.0.push(key);
    }
}

impl Deref for PublicKeys {
    type Target = [PublicKey];

    fn deref(&self) -> &[PublicKey] {
        &self.0
    }
}

impl From<Vec<PublicKey>> for PublicKeys {
    fn from(keys: Vec<PublicKey>) -> PublicKeys {
        PublicKeys(keys)
    }
}

impl FromIterator<PublicKey> for PublicKeys {
    fn from_iter<I: IntoIterator<Item = PublicKey>>(iter: I) -> PublicKeys {
        PublicKeys(iter.into_iter().collect())
    }
}

/// Trims surrounding whitespace and trailing literal `\n`/`\r` escapes, which tokens copied out
/// of files and shell variables pick up; a backslash never occurs in a token, so this is safe.
fn strip_surroundings(token: &str) -> &str {
    let mut token = token.trim();
    loop {
        let stripped = token
            .strip_suffix("\\n")
            .or_else(|| token.strip_suffix("\\r"))
            .map(str::trim_end);
        match stripped {
            Some(shorter) => token = shorter,
            None => return token,
        }
    }
}

fn decode_json_object(segment: &str, what: &str) -> Result<Map<String, Value>> {
    let bytes =
        b64::decode_lenient(segment).ok_or_else(|| malformed(&format!("{what} is not base64")))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(malformed(&format!("{what} is not a JSON object"))),
        Err(_) => Err(malformed(&format!("{what} is not JSON"))),
    }
}

fn check_expiry(claims: &Claims, now_unix: i64, rule: ExpiryRule) -> Result<()> {
    let Some(value) = claims.get("exp") else {
        return Ok(());
    };
    let raw = raw_exp(value).ok_or_else(|| malformed("`exp` is not a number"))?;
    let exp = match rule {
        ExpiryRule::Enforce => claims.exp().unwrap_or(raw),
        ExpiryRule::AbacoSeconds => raw,
    };
    if now_unix > exp.saturating_add(LEEWAY_SECS) {
        return Err(IdentityError::Expired { exp });
    }
    Ok(())
}

/// `exp` as an integer; fractional seconds are truncated.
fn raw_exp(value: &Value) -> Option<i64> {
    match value {
        Value::Number(number) => number
            .as_i64()
            // Float-to-int `as` saturates, which is the intent for absurd values.
            .or_else(|| number.as_f64().map(|exp| exp as i64)),
        _ => None,
    }
}

fn roles_of(value: &Value) -> Vec<String> {
    match value {
        Value::String(roles) => split_roles(roles),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .flat_map(split_roles)
            .collect(),
        _ => Vec::new(),
    }
}

fn split_roles(roles: &str) -> Vec<String> {
    roles
        .split(',')
        .map(str::trim)
        .filter(|role| !role.is_empty())
        .map(String::from)
        .collect()
}

fn parse_pem_blocks(text: &str) -> Result<PublicKeys> {
    let mut keys = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after_begin = &rest[start + "-----BEGIN ".len()..];
        let label_end = after_begin
            .find("-----")
            .ok_or_else(|| invalid_key("unterminated PEM header"))?;
        let label = &after_begin[..label_end];
        let body_and_rest = &after_begin[label_end + "-----".len()..];
        let end_marker = format!("-----END {label}-----");
        let body_end = body_and_rest
            .find(&end_marker)
            .ok_or_else(|| invalid_key(format!("PEM block `{label}` has no END line")))?;
        match label {
            "PUBLIC KEY" | "RSA PUBLIC KEY" => {
                let der = decode_base64_text(&body_and_rest[..body_end])
                    .ok_or_else(|| invalid_key(format!("PEM block `{label}` is not base64")))?;
                keys.push(PublicKey::from_der(&der)?);
            }
            other => {
                return Err(invalid_key(format!(
                    "PEM block `{other}` is not PUBLIC KEY or RSA PUBLIC KEY"
                )));
            }
        }
        rest = &body_and_rest[body_end + end_marker.len()..];
    }
    if keys.is_empty() {
        return Err(invalid_key("no PEM public key found"));
    }
    Ok(PublicKeys(keys))
}

/// Decodes base64 spread over lines (PEM bodies, wrapped config values).
fn decode_base64_text(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.is_empty() {
        return None;
    }
    b64::decode_lenient(&compact)
}

fn parse_jwk(jwk: &Value) -> Result<Option<PublicKey>> {
    let field = |name: &str| jwk.get(name).and_then(Value::as_str);
    if field("kty") != Some("RSA") || field("use").is_some_and(|usage| usage != "sig") {
        return Ok(None);
    }
    let kid = field("kid");
    let component = |name: &str| {
        field(name).and_then(b64::decode_lenient).ok_or_else(|| {
            invalid_key(format!(
                "JWK {} has no base64url `{name}`",
                kid.unwrap_or("(no kid)")
            ))
        })
    };
    let key = PublicKey::from_components(&component("n")?, &component("e")?)?;
    Ok(Some(match kid {
        Some(kid) => key.with_kid(kid),
        None => key,
    }))
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes
        .iter()
        .position(|byte| *byte != 0)
        .unwrap_or(bytes.len());
    &bytes[first..]
}

fn modulus_bits(n: &[u8]) -> u32 {
    match n.first() {
        None => 0,
        Some(top) => {
            let bytes = u32::try_from(n.len()).unwrap_or(u32::MAX);
            bytes
                .saturating_sub(1)
                .saturating_mul(8)
                .saturating_add(8 - top.leading_zeros())
        }
    }
}

fn check_bits(bits: u32) -> Result<()> {
    if (MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        Ok(())
    } else {
        Err(invalid_key(format!(
            "RSA key of {bits} bits; {MIN_RSA_BITS} to {MAX_RSA_BITS} accepted"
        )))
    }
}

fn malformed(reason: &str) -> IdentityError {
    IdentityError::Malformed(reason.to_owned())
}

fn invalid_key(reason: impl Into<String>) -> IdentityError {
    IdentityError::InvalidKey(reason.into())
}

#[cfg(test)]
mod tests;
