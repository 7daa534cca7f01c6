//! Status enums of actors, workers and executions, with Abaco's wire strings exactly
//! (`SPAWNER SETUP` has a space, `SHUTDOWN_REQUESTED` an underscore).

use serde::{Deserialize, Serialize};

macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $wire)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire),+ }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s { $($wire => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum!(
    /// Actor status (spec §6.1). Actors never take `BUSY` or `RUNNING`.
    ActorStatus {
        Submitted => "SUBMITTED",
        Ready => "READY",
        Error => "ERROR",
        ShuttingDown => "SHUTTING_DOWN",
    }
);

wire_enum!(
    /// Worker status (spec §6.2).
    WorkerStatus {
        Requested => "REQUESTED",
        SpawnerSetup => "SPAWNER SETUP",
        PullingImage => "PULLING IMAGE",
        CreatingContainer => "CREATING CONTAINER",
        UpdatingStore => "UPDATING STORE",
        Ready => "READY",
        Busy => "BUSY",
        ShutdownRequested => "SHUTDOWN_REQUESTED",
        ShuttingDown => "SHUTTING_DOWN",
        Error => "ERROR",
    }
);

wire_enum!(
    /// Execution status (spec §6.3).
    ExecutionStatus {
        Submitted => "SUBMITTED",
        Running => "RUNNING",
        Complete => "COMPLETE",
        Error => "ERROR",
    }
);

impl WorkerStatus {
    /// The statuses a worker may be in for the transition to `self` to be applied (spec §6.2),
    /// or `None` when any status may precede it.
    pub fn allowed_predecessors(self) -> Option<&'static [WorkerStatus]> {
        use WorkerStatus::*;
        match self {
            SpawnerSetup => Some(&[Requested]),
            PullingImage => Some(&[SpawnerSetup]),
            CreatingContainer => Some(&[PullingImage]),
            UpdatingStore => Some(&[CreatingContainer]),
            Ready => Some(&[CreatingContainer, UpdatingStore, Busy, Ready]),
            Busy => Some(&[Ready]),
            Requested | ShutdownRequested | ShuttingDown | Error => None,
        }
    }

    /// A worker that is still coming up or serving (counts towards an actor's workers).
    pub fn is_viable(self) -> bool {
        !matches!(
            self,
            WorkerStatus::Error | WorkerStatus::ShutdownRequested | WorkerStatus::ShuttingDown
        )
    }
}

impl ExecutionStatus {
    pub fn is_final(self) -> bool {
        matches!(self, ExecutionStatus::Complete | ExecutionStatus::Error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_strings_round_trip() {
        for s in WorkerStatus::ALL {
            let json = serde_json::to_string(s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(WorkerStatus::parse(s.as_str()), Some(*s));
        }
        assert_eq!(WorkerStatus::SpawnerSetup.as_str(), "SPAWNER SETUP");
        assert_eq!(
            WorkerStatus::ShutdownRequested.as_str(),
            "SHUTDOWN_REQUESTED"
        );
    }

    #[test]
    fn worker_transitions_follow_the_spec() {
        use WorkerStatus::*;
        assert_eq!(SpawnerSetup.allowed_predecessors(), Some(&[Requested][..]));
        assert!(Busy.allowed_predecessors().unwrap().contains(&Ready));
        assert!(!Busy.allowed_predecessors().unwrap().contains(&Requested));
        assert_eq!(ShuttingDown.allowed_predecessors(), None);
    }
}

/// Permission levels, ordered (spec §2.4): `NONE < READ < EXECUTE < UPDATE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PermissionLevel {
    #[serde(rename = "NONE")]
    None,
    #[serde(rename = "READ")]
    Read,
    #[serde(rename = "EXECUTE")]
    Execute,
    #[serde(rename = "UPDATE")]
    Update,
}

impl PermissionLevel {
    pub const ALL: &'static [PermissionLevel] = &[
        PermissionLevel::None,
        PermissionLevel::Read,
        PermissionLevel::Execute,
        PermissionLevel::Update,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PermissionLevel::None => "NONE",
            PermissionLevel::Read => "READ",
            PermissionLevel::Execute => "EXECUTE",
            PermissionLevel::Update => "UPDATE",
        }
    }

    pub fn parse(s: &str) -> Option<PermissionLevel> {
        PermissionLevel::ALL
            .iter()
            .copied()
            .find(|l| l.as_str() == s)
    }
}

impl std::fmt::Display for PermissionLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The user name that grants its level to everyone (Abaco's world-readable marker).
pub const WORLD: &str = "ABACO_WORLD";

#[cfg(test)]
mod permission_tests {
    use super::PermissionLevel::*;

    #[test]
    fn levels_are_ordered() {
        assert!(None < Read && Read < Execute && Execute < Update);
        assert_eq!(super::PermissionLevel::parse("EXECUTE"), Some(Execute));
        assert_eq!(super::PermissionLevel::parse("execute"), Option::None);
    }
}
