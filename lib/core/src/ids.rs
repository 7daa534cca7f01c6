//! Identifiers. Abaco's ids are hashids (salt `eJa5wZlEX4eWU`) of a 64-bit number; we generate them
//! the same way so `is_hashid` tells actor ids from aliases exactly as Abaco does.

use std::fmt;

use serde::{Deserialize, Serialize};

const HASHID_SALT: &str = "eJa5wZlEX4eWU";

/// The encoder, built once (building it shuffles the alphabet: costly on every id).
fn hasher() -> &'static harsh::Harsh {
    static HASHER: std::sync::OnceLock<harsh::Harsh> = std::sync::OnceLock::new();
    HASHER.get_or_init(|| {
        harsh::Harsh::builder()
            .salt(HASHID_SALT)
            .build()
            .expect("static hashid configuration is valid")
    })
}

/// A fresh hashid: 12–13 characters of `[a-zA-Z0-9]`.
pub fn new_hashid() -> String {
    // Abaco encodes the top 64 bits of a uuid1; any well-distributed u64 gives the same shape.
    let n: u64 = rand::random::<u64>() >> 1;
    hasher().encode(&[n])
}

/// Whether `s` decodes as a hashid with Abaco's salt (how Abaco tells ids from aliases).
pub fn is_hashid(s: &str) -> bool {
    !s.is_empty() && hasher().decode(s).map(|v| !v.is_empty()).unwrap_or(false)
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_string())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }
    };
}

id_type!(
    /// The human actor id (a hashid), as it appears in URLs.
    ActorId
);
id_type!(
    /// An execution id (a hashid).
    ExecutionId
);
id_type!(
    /// A worker id (a hashid).
    WorkerId
);
id_type!(
    /// A tenant name, upper-cased (`DEV-DEVELOP`).
    Tenant
);
id_type!(
    /// The storage key of an actor: `"{tenant}_{actor_id}"`.
    DbId
);

impl ActorId {
    pub fn generate() -> Self {
        Self(new_hashid())
    }
}

impl ExecutionId {
    pub fn generate() -> Self {
        Self(new_hashid())
    }
}

impl WorkerId {
    pub fn generate() -> Self {
        Self(new_hashid())
    }
}

impl DbId {
    pub fn new(tenant: &Tenant, actor_id: &ActorId) -> Self {
        Self(format!("{}_{}", tenant.0, actor_id.0))
    }

    /// The human actor id: the part after the last `_` (tenants never contain `_` in keys we build).
    pub fn actor_id(&self) -> ActorId {
        ActorId(
            self.0
                .rsplit_once('_')
                .map(|(_, id)| id.to_string())
                .unwrap_or_else(|| self.0.clone()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_hashids_and_words_are_not() {
        for _ in 0..100 {
            let id = new_hashid();
            assert!(id.len() >= 8, "{id}");
            assert!(id.chars().all(|c| c.is_ascii_alphanumeric()), "{id}");
            assert!(is_hashid(&id), "{id}");
        }
        assert!(!is_hashid("my-alias"));
        assert!(!is_hashid(""));
    }

    #[test]
    fn db_id_round_trips_the_actor_id() {
        let tenant = Tenant::from("DEV-DEVELOP");
        let actor_id = ActorId::generate();
        let db_id = DbId::new(&tenant, &actor_id);
        assert_eq!(db_id.as_str(), format!("DEV-DEVELOP_{actor_id}"));
        assert_eq!(db_id.actor_id(), actor_id);
    }
}
