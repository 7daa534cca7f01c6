//! Coordination records on `Kind::Meta`, built on the atomic primitives: counters
//! (`counter:{name}`, one integer per field) and named locks (`lock:{name}`, a document
//! `{"holder": ..., "since": <rfc3339>}`; only a string `holder` makes a lock held).

use abaco_core::time::{display, now};
use serde_json::{json, Map, Value};

use crate::backend::{Kind, Update};
use crate::{Result, Store, StoreError};

/// The parent of every counter document.
const COUNTERS: &str = "counters";
/// The parent of every lock document.
const LOCKS: &str = "locks";

fn counter_key(name: &str) -> String {
    format!("counter:{name}")
}

fn lock_key(name: &str) -> String {
    format!("lock:{name}")
}

/// The holder of a lock document, if it is held.
fn holder_of(doc: Option<&Value>) -> Option<&str> {
    doc.and_then(|d| d.get("holder")).and_then(Value::as_str)
}

fn lock_doc(holder: &str) -> Value {
    json!({"holder": holder, "since": display(Some(&now()))})
}

impl Store {
    // ---- counters -----------------------------------------------------------------------------

    /// Atomically adds `by` to the integer `field` of the counter `name` (absent fields and
    /// counters start at 0) and returns the new value. Fails, changing nothing, when the field
    /// holds something other than an integer or the sum overflows.
    pub async fn increment_counter(&self, name: &str, field: &str, by: i64) -> Result<i64> {
        let fields = self.increment_counters(name, &[(field, by)]).await?;
        fields
            .get(field)
            .and_then(Value::as_i64)
            .ok_or_else(|| StoreError::Backend(format!("counter {name}: {field} was not written")))
    }

    /// Atomically adds each `(field, by)` to the counter `name`, all or none; returns every field
    /// of the counter afterwards. Fails, changing nothing, when a field holds something other
    /// than an integer or a sum overflows.
    pub async fn increment_counters(
        &self,
        name: &str,
        increments: &[(&str, i64)],
    ) -> Result<Map<String, Value>> {
        let key = counter_key(name);
        let add = |current: Option<&Value>| -> Option<Value> {
            let mut fields = match current {
                None => Map::new(),
                Some(Value::Object(fields)) => fields.clone(),
                Some(_) => return None,
            };
            for (field, by) in increments {
                let sum = match fields.get(*field) {
                    None => *by,
                    Some(value) => value.as_i64()?.checked_add(*by)?,
                };
                fields.insert(field.to_string(), Value::from(sum));
            }
            Some(Value::Object(fields))
        };
        match self.0.update(Kind::Meta, &key, COUNTERS, &add).await? {
            Update::Written(Value::Object(fields)) => Ok(fields),
            Update::Written(other) => Err(StoreError::Corrupt {
                kind: Kind::Meta.name(),
                key,
                cause: format!("a counter is an object, not {other}"),
            }),
            Update::Unchanged(doc) => Err(StoreError::Corrupt {
                kind: Kind::Meta.name(),
                key,
                cause: format!(
                    "cannot add {increments:?} to {}",
                    doc.unwrap_or(Value::Null)
                ),
            }),
        }
    }

    /// Deletes the counter `name`; whether it existed.
    pub async fn delete_counter(&self, name: &str) -> Result<bool> {
        self.0.delete(Kind::Meta, &counter_key(name)).await
    }

    /// Every field of the counter `name` (empty when it was never incremented).
    pub async fn counters(&self, name: &str) -> Result<Map<String, Value>> {
        let key = counter_key(name);
        match self.0.get(Kind::Meta, &key).await? {
            None => Ok(Map::new()),
            Some(Value::Object(fields)) => Ok(fields),
            Some(other) => Err(StoreError::Corrupt {
                kind: Kind::Meta.name(),
                key,
                cause: format!("a counter is an object, not {other}"),
            }),
        }
    }

    // ---- locks --------------------------------------------------------------------------------

    /// Takes the lock `name` for `holder` if it is free; `true` also when `holder` already has it
    /// (which keeps its `since`).
    pub async fn try_lock(&self, name: &str, holder: &str) -> Result<bool> {
        let doc = lock_doc(holder);
        let take = |current: Option<&Value>| match holder_of(current) {
            None => Some(doc.clone()),
            Some(_) => None,
        };
        match self
            .0
            .update(Kind::Meta, &lock_key(name), LOCKS, &take)
            .await?
        {
            Update::Written(_) => Ok(true),
            Update::Unchanged(current) => Ok(holder_of(current.as_ref()) == Some(holder)),
        }
    }

    /// Releases (deletes) the lock `name` if `holder` has it; `false` otherwise.
    pub async fn unlock(&self, name: &str, holder: &str) -> Result<bool> {
        self.0
            .delete_guarded(Kind::Meta, &lock_key(name), ("holder", &[holder]))
            .await
    }

    /// Who holds the lock `name`, if anyone.
    pub async fn lock_holder(&self, name: &str) -> Result<Option<String>> {
        let doc = self.0.get(Kind::Meta, &lock_key(name)).await?;
        Ok(holder_of(doc.as_ref()).map(str::to_string))
    }

    /// Takes or renews the lease `name` for `holder`: granted when nobody holds it, when `holder`
    /// already does (its `since` is renewed), or when the holder has not renewed it within
    /// `ttl` (it died). Processes that call this every period take turns only when one dies.
    pub async fn lease(&self, name: &str, holder: &str, ttl: std::time::Duration) -> Result<bool> {
        let stamp = now();
        let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        let doc = json!({"holder": holder, "since": display(Some(&stamp))});
        let take = |current: Option<&Value>| {
            let expired = current
                .and_then(|d| d.get("since"))
                .and_then(Value::as_str)
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                .is_none_or(|since| stamp.signed_duration_since(since) >= ttl);
            match holder_of(current) {
                Some(other) if other != holder && !expired => None,
                _ => Some(doc.clone()),
            }
        };
        Ok(matches!(
            self.0
                .update(Kind::Meta, &lock_key(name), LOCKS, &take)
                .await?,
            Update::Written(_)
        ))
    }

    /// Hands the lock `name` from `from` to `to` (resetting `since`) if `from` has it.
    pub async fn steal_lock(&self, name: &str, from: &str, to: &str) -> Result<bool> {
        let doc = lock_doc(to);
        let steal =
            |current: Option<&Value>| (holder_of(current) == Some(from)).then(|| doc.clone());
        Ok(matches!(
            self.0
                .update(Kind::Meta, &lock_key(name), LOCKS, &steal)
                .await?,
            Update::Written(_)
        ))
    }
}
