//! Random bytes for nonces, salts, token ids and generated secrets, from AWS-LC's DRBG.

/// Returns `N` cryptographically random bytes.
///
/// AWS-LC's `RAND_bytes` aborts the process on entropy failure and otherwise always returns
/// success, so the error arm below cannot be reached; if a future version did report failure,
/// panicking is the only safe answer because continuing would hand out predictable secrets.
pub(crate) fn bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    #[allow(clippy::expect_used)]
    aws_lc_rs::rand::fill(&mut out).expect("AWS-LC RAND_bytes does not fail");
    out
}
