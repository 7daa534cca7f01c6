//! The layout of the execution counters that workers keep in the store and `/metrics` reads:
//! one counter document named `EXECUTIONS` with a field per final status, one per duration
//! bucket (not cumulative), the total count and the sum of durations in milliseconds.

use crate::ExecutionStatus;

/// Name of the counter document.
pub const EXECUTIONS: &str = "executions";

/// Upper bounds, in seconds, of the execution duration histogram.
pub const DURATION_BUCKETS: &[f64] = &[0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

pub fn status_field(status: ExecutionStatus) -> String {
    format!("status_{}", status.as_str())
}

pub fn bucket_field(i: usize) -> String {
    format!("bucket_{i}")
}

/// The field of the bucket a duration falls in (`None`: above the last bound, only in `+Inf`).
pub fn bucket_of(seconds: f64) -> Option<String> {
    DURATION_BUCKETS
        .iter()
        .position(|le| seconds <= *le)
        .map(bucket_field)
}

pub const COUNT: &str = "count";
pub const SUM_MS: &str = "sum_ms";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_fall_in_their_bucket() {
        assert_eq!(bucket_of(0.1).as_deref(), Some("bucket_0"));
        assert_eq!(bucket_of(1.0).as_deref(), Some("bucket_1"));
        assert_eq!(bucket_of(7.0).as_deref(), Some("bucket_4"));
        assert_eq!(bucket_of(1e9), None);
    }
}
