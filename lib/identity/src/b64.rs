//! Base64 the way identity data arrives: gateway tokens mix standard and URL-safe alphabets
//! with or without `=` padding, so decoding tries both alphabets and ignores padding, while
//! everything this crate produces is canonical URL-safe base64 without padding.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine;

const INDIFFERENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, INDIFFERENT);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, INDIFFERENT);

/// Decodes base64url or standard base64, padded or not; `None` if it is neither.
pub(crate) fn decode_lenient(input: &str) -> Option<Vec<u8>> {
    URL_SAFE_LENIENT
        .decode(input)
        .or_else(|_| STANDARD_LENIENT.decode(input))
        .ok()
}

/// Encodes as base64url without padding, the JWT and on-disk format of this crate.
pub(crate) fn encode_url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}
