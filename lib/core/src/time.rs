//! Timestamps. Everything is UTC; the wire form is `YYYY-MM-DDTHH:MM:SS.mmmZ` (what the spec recommends
//! instead of Abaco's mangled `display_time`).

use chrono::{DateTime, SecondsFormat, Utc};

pub type Timestamp = DateTime<Utc>;

pub fn now() -> Timestamp {
    Utc::now()
}

/// The wire form of a timestamp, or `"None"` when absent (as Abaco displays it).
pub fn display(t: Option<&Timestamp>) -> String {
    match t {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => "None".to_string(),
    }
}
